"""onnx2snn's simulator next to SpikingJelly on the same IF networks, in one run.

For each network it converts the ONNX model with onnx2snn (calibrating on the data), times
onnx2snn's simulator on a batch for T steps (direct input, ideal schedule, float32), exports the
converted graph (structure and arrays) and has SpikingJelly run the same network in its own
virtualenv (``sj_worker.py`` in the repository root's .venv-sj, built by ``setup_spikingjelly.sh``: Python
3.11, torch 2.13.0 CPU, spikingjelly 2.0.0): multi-step ``IFNode`` populations, synapse layers
over all T·B inputs at once, the time-constant input through the first layer once, as onnx2snn
does. Both run with the same number of threads (``--threads``, default 2; torch's threads wait
passively). Printed per network: images·steps per second of each, the ratio onnx2snn /
SpikingJelly, the ratio of onnx2snn to the dense bound (this machine's float32 GEMM rate over
the MACs per image·step), and how often the two predict the same class at step T (the networks
are the same; they differ in float rounding and in where v0 and the bias enter).

Networks: the bundled digits nets (MLP, CNN, depthwise-separable, ResNet with average pooling),
the MNIST-size nets ``mnist_*.onnx`` with ``mnist_calib.npz`` and ``mnist_test.npz`` of the
folder ``--mnist`` (default models/) when it has them, and the CIFAR-size ResNet-18 of
``nets.py``. Max pooling is converted to average pooling (``Recipe(maxpool="avg")``), which
SpikingJelly runs as it is; onnx2snn's max-pool gate has no SpikingJelly form here.

    bash benchmarks/setup_spikingjelly.sh            # once (builds .venv-sj)
    ./dev shell python benchmarks/bench_spikingjelly.py [--quick] [-T 64] [--mnist DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_simulator import gemm_macs_per_second  # noqa: E402
from nets import cifar_resnet18  # noqa: E402

from onnx2snn.backends.numpy import simulate  # noqa: E402
from onnx2snn.convert import Recipe, convert  # noqa: E402
from onnx2snn.ir.graph import Graph  # noqa: E402


def export_graph(graph: Graph, path: Path) -> None:
    """The graph as one .npz: ``__graph__`` (JSON list of nodes) and ``NODE/FIELD`` arrays."""
    nodes = []
    arrays: dict[str, np.ndarray] = {}
    for n in graph.nodes:
        attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in n.attributes().items()}
        nodes.append({"name": n.name, "kind": n.kind, "inputs": list(n.inputs),
                      "shape": list(n.shape), "attrs": attrs})
        for field, a in n.arrays().items():
            arrays[f"{n.name}/{field}"] = np.asarray(a)
    arrays["__graph__"] = np.frombuffer(json.dumps(nodes).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def networks(quick: bool, mnist: Path) -> list[tuple[str, object, np.ndarray, np.ndarray, int]]:
    """(name, ONNX model, calibration inputs, test inputs, batch) of every network to run."""
    digits = np.load(ROOT / "models" / "digits_test.npz")["x"]
    calib = np.load(ROOT / "models" / "digits_calib.npz")["x"]
    b = 128 if quick else 497
    nets = [(m, ROOT / "models" / f"{m}.onnx", calib, digits[:b], b)
            for m in ("digits_mlp", "digits_cnn", "digits_dwsep", "digits_resnet_avg")]
    b = 32 if quick else 128
    for path in sorted(mnist.glob("mnist_*.onnx")):
        mnist_calib = np.load(mnist / "mnist_calib.npz")["x"]
        mnist_x = np.load(mnist / "mnist_test.npz")["x"][:b]
        nets.append((path.stem, path, mnist_calib, mnist_x, b))
    model, shape = cifar_resnet18()
    rng = np.random.default_rng(0)
    b = 4 if quick else 16
    nets.append(("cifar_resnet18", model, rng.uniform(0, 1, (8,) + shape).astype(np.float32),
                 rng.uniform(0, 1, (b,) + shape).astype(np.float32), b))
    return nets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches")
    parser.add_argument("-T", type=int, default=64, help="time steps (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="threads of each (default 2)")
    parser.add_argument("--mnist", type=Path, default=ROOT / "models",
                        help="folder of mnist_*.onnx, mnist_calib.npz, mnist_test.npz")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="MaxPool .* replaced by average pooling")
    sj_python = subprocess.run(["bash", str(HERE / "setup_spikingjelly.sh")], check=True,
                               capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE",
               ONNX2SNN_THREADS=str(args.threads))
    os.environ["ONNX2SNN_THREADS"] = str(args.threads)
    gemm = gemm_macs_per_second()
    print(f"float32 GEMM rate on this machine: {gemm / 1e9:.1f} G MAC/s; T={args.T}, "
          f"{args.threads} threads each")
    print(f"{'network':<20} {'batch':>5} {'M MACs':>8} {'onnx2snn':>12} {'SpikingJelly':>12} "
          f"{'ratio':>6} {'of bound':>8} {'same class':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, calib, x, batch in networks(args.quick, args.mnist):
            snn = convert(model, calib, Recipe(maxpool="avg")).snn  # type: ignore[arg-type]
            macs = snn.macs()
            simulate(snn, x[:2], 2)  # sessions and caches, not timed
            t = time.perf_counter()
            r = simulate(snn, x, args.T)
            ours = len(x) * args.T / (time.perf_counter() - t)
            (pred,) = r.predictions.values()
            classes = pred[-1].reshape(len(x), -1).argmax(1)
            gpath, xpath = Path(tmp) / f"{name}.npz", Path(tmp) / f"{name}_x.npy"
            export_graph(snn, gpath)
            np.save(xpath, x)
            out = subprocess.run([sj_python, str(HERE / "sj_worker.py"), str(gpath), str(xpath),
                                  str(args.T), str(args.threads)], capture_output=True, text=True,
                                 env=env)
            if out.returncode:
                print(f"{name:<20} SpikingJelly failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            sj = json.loads(out.stdout.strip().splitlines()[-1])
            theirs = len(x) * args.T / sj["seconds"]
            same = float((np.array(sj["classes"]) == classes).mean())
            print(f"{name:<20} {batch:>5} {macs / 1e6:>8.2f} {ours:>12,.0f} {theirs:>12,.0f} "
                  f"{ours / theirs:>6.2f} {ours * macs / gemm:>8.3f} {100 * same:>9.1f}%",
                  flush=True)
    print("columns onnx2snn and SpikingJelly: images·steps per second; ratio: onnx2snn / "
          "SpikingJelly; of bound: onnx2snn / (GEMM rate / MACs per image·step)")


if __name__ == "__main__":
    main()
