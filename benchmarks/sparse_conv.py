"""Would a sparse convolution over binary spikes beat the dense one the simulator runs?

For each 3×3 convolution shape of the CIFAR-size ResNet-18 (``nets.py``: 64 to 512 channels,
32×32 to 4×4 maps) and each firing rate, it draws binary spikes x (N, C, H, W) with that rate and
computes y = W ∗ x twice:

* dense: the simulator's kernel, a one-node onnxruntime ``Conv`` session
  (``kernels.ort_kernel``, what ``--kernels auto`` runs);
* sparse: the event-driven form, which touches only the spikes: every spike at (n, c, h, w) is
  one non-zero of the im2col matrix X (N·H·W × C·K·K) in each row (n, i, j) whose window holds
  it, and y = X · Wᵀ with X in SciPy's CSR format (built from ``np.nonzero`` of the spikes, as a
  sparse path would have to each step) times the dense (C·K·K × O) weights. Its cost is
  nnz(X)·O multiply-adds, a fraction ``rate`` of the dense N·H·W·C·K·K·O.

It prints the median time of each (``--repeats``, interleaved), the dense kernel's G MAC/s, the
sparse one's speed-up (below 1: slower) and the largest difference (float rounding). SciPy is
what the product's virtualenv has (a dependency of lava-nc); its sparse product runs on one
thread, so the dense kernel is also given one thread in a second column for a per-core view.

    ./dev shell python benchmarks/sparse_conv.py [--rates 0.05,0.1,0.2] [--batch 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from onnx2snn.backends.numpy import kernels as K
from onnx2snn.ir.nodes import Conv

SHAPES = ((64, 32), (128, 16), (256, 8), (512, 4))  # (channels, map size) of ResNet-18's stages


def sparse_conv(x: np.ndarray, wt: np.ndarray, k: int) -> np.ndarray:
    """y = X · wt for binary x (N, C, H, W), 'same' padding, stride 1; wt is (C·k·k, O)."""
    n, c, h, w = x.shape
    nn, cc, hh, ww = np.nonzero(x)
    rows, cols = [], []
    for u in range(k):
        for v in range(k):
            i, j = hh - u + k // 2, ww - v + k // 2  # the output whose window sees this spike
            ok = (i >= 0) & (i < h) & (j >= 0) & (j < w)
            rows.append((nn[ok] * h + i[ok]) * w + j[ok])
            cols.append(cc[ok] * k * k + u * k + v)
    r, col = np.concatenate(rows), np.concatenate(cols)
    mat = sp.csr_matrix((np.ones(len(r), np.float32), (r, col)), shape=(n * h * w, c * k * k))
    return np.asarray(mat @ wt).reshape(n, h, w, -1).transpose(0, 3, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0.05,0.1,0.2", help="firing rates (spikes per cell)")
    parser.add_argument("--batch", type=int, default=8, help="samples·steps per call (default 8)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    k = 3
    print(f"{'C':>4} {'map':>5} {'rate':>5} {'dense ms':>9} {'G MAC/s':>8} {'1 thread':>9} "
          f"{'sparse ms':>10} {'speed-up':>9} {'vs 1 thread':>11} {'max diff':>9}")
    for c, hw in SHAPES:
        weight = rng.normal(0, 0.05, (c, c, k, k)).astype(np.float32)
        node = Conv(name="conv", inputs=("x",), shape=(c, hw, hw), weight=weight,
                    pads=(1, 1, 1, 1))
        os.environ[K.THREADS_ENV] = "1"
        one = K.ort_kernel(node, (c, hw, hw), np.float32)
        os.environ.pop(K.THREADS_ENV)
        dense = K.ort_kernel(node, (c, hw, hw), np.float32)
        wt = np.ascontiguousarray(weight.transpose(1, 2, 3, 0).reshape(c * k * k, c))
        macs = args.batch * hw * hw * c * c * k * k
        for rate in map(float, args.rates.split(",")):
            x = (rng.random((args.batch, c, hw, hw)) < rate).astype(np.float32)
            diff = float(np.abs(dense(x) - sparse_conv(x, wt, k)).max())
            times: dict[str, list[float]] = {"dense": [], "one": [], "sparse": []}
            for _ in range(args.repeats):
                runs: tuple[tuple[str, Callable[..., np.ndarray], tuple[object, ...]], ...] = (
                    ("dense", dense, (x,)), ("one", one, (x,)), ("sparse", sparse_conv, (x, wt, k)))
                for name, fn, fn_args in runs:
                    t = time.perf_counter()
                    fn(*fn_args)
                    times[name].append(time.perf_counter() - t)
            d, o, s = (float(np.median(times[n])) for n in ("dense", "one", "sparse"))
            print(f"{c:>4} {hw:>2}x{hw:<2} {rate:>5.2f} {d * 1e3:>9.2f} {macs / d / 1e9:>8.1f} "
                  f"{o * 1e3:>9.2f} {s * 1e3:>10.2f} {d / s:>9.2f} {o / s:>11.2f} {diff:>9.1e}",
                  flush=True)


if __name__ == "__main__":
    main()
