"""Throughput of the reference simulator, in images·steps per second, against this machine's bound.

For each network it converts (calibrating on a few inputs), simulates a batch for T steps with
direct input on the ideal schedule, and prints images·steps/s. The bound is what a machine doing
nothing but the ANN's multiply-accumulates at its measured float32 GEMM rate would reach:
bound = GEMM MAC/s / MACs per image·step, with the GEMM rate measured in the same run (ratios of
one run are what count on a noisy shared machine). ``ratio`` = measured / bound.

    ./dev shell python benchmarks/bench_simulator.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from onnx2snn.backends.numpy import simulate
from onnx2snn.convert import Recipe, convert
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.samples import randomized_light_model


def gemm_macs_per_second(n: int = 1024, repeats: int = 20) -> float:
    """Best float32 (n×n)·(n×n) rate over ``repeats`` runs, in multiply-accumulates per second
    (best of many: on a shared machine one slow run would inflate ratios to this bound)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return n**3 / best


def bench(name: str, model: object, x: np.ndarray, timesteps: int, gemm: float) -> None:
    """Convert, simulate once to warm up caches, then time one simulation."""
    conv = convert(model, x, Recipe())  # type: ignore[arg-type]
    macs = conv.ann.macs()
    simulate(conv.snn, x[:1], 2)
    t = time.perf_counter()
    simulate(conv.snn, x, timesteps)
    dt = time.perf_counter() - t
    rate = len(x) * timesteps / dt
    bound = gemm / macs
    print(f"{name:<14} batch {len(x):>4}  T={timesteps}  {dt:7.2f} s  "
          f"{rate:12,.1f} images·steps/s  bound {bound:12,.1f}  ratio {rate / bound:6.3f}  "
          f"({macs / 1e6:,.1f} M MACs/image·step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches")
    parser.add_argument("-T", type=int, default=32)
    args = parser.parse_args()
    gemm = gemm_macs_per_second()
    print(f"float32 GEMM rate on this machine: {gemm / 1e9:.1f} G MAC/s")
    digits = np.load("models/digits_test.npz")["x"]
    bench("digits CNN", "models/digits_cnn.onnx", digits[:128 if args.quick else 540], args.T,
          gemm)
    resnet = randomized_light_model("resnet50")
    shape = onnx_to_ann(resnet)
    in_shape = shape[shape.inputs[0]].shape
    x = np.random.default_rng(0).uniform(0, 1, (1 if args.quick else 2,) + in_shape)
    bench("ResNet-50", resnet, x.astype(np.float32), args.T, gemm)


if __name__ == "__main__":
    main()
