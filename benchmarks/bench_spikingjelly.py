"""onnx2snn's simulator next to SpikingJelly on the same IF networks, in one run.

For each network it converts the ONNX model with onnx2snn (calibrating on the data), times
onnx2snn's simulator on a batch for T steps (direct input, ideal schedule, float32), exports the
converted graph (structure and arrays) and has SpikingJelly run the same network in its own
virtualenv (``sj_worker.py`` in the repository root's .venv-sj, built by ``setup_spikingjelly.sh``: Python
3.11, torch 2.13.0 CPU, spikingjelly 2.0.0): multi-step ``IFNode`` populations, synapse layers
over all T·B inputs at once, the time-constant input through the first layer once, as onnx2snn
does. Both run with the same number of threads (``--threads``, default 2; torch's threads wait
passively). Printed per network: the firing rate, images·steps per second of each, the
ratio onnx2snn / SpikingJelly, the ratio of onnx2snn to the dense bound (this machine's float32
GEMM rate over the MACs per image·step), and how often the two predict the same class at step T (the networks
are the same; they differ in float rounding and in where v0 and the bias enter).

Networks: the bundled digits nets (MLP, CNN, depthwise-separable, ResNet with average pooling),
the MNIST-size nets ``mnist_*.onnx`` with ``mnist_calib.npz`` and ``mnist_test.npz`` of the
folder ``--mnist`` (default models/) when it has them, and the CIFAR-size ResNet-18 of
``nets.py``. Max pooling is converted to average pooling (``Recipe(maxpool="avg")``), which
SpikingJelly runs as it is; onnx2snn's max-pool gate has no SpikingJelly form here.

    bash benchmarks/setup_spikingjelly.sh            # once (builds .venv-sj)
    ./dev shell python benchmarks/bench_spikingjelly.py [--quick] [-T 64] [--repeats 5]
        [--nets digits_cnn,mnist_vgg] [--mnist DIR]

Timing on a shared machine is noisy, so each network is timed ``--repeats`` times on each side,
the two interleaved (onnx2snn then SpikingJelly, then the other way round, ...), and the ratio is
the median of the per-round ratios, printed with its smallest and largest value.
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
from typing import IO

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_simulator import gemm_macs_per_second  # noqa: E402
from nets import cifar_resnet18  # noqa: E402

from onnx2snn.backends.numpy import simulate  # noqa: E402
from onnx2snn.blas import thread_timeout  # noqa: E402
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


def start_worker(sj_python: str, graph: Path, x: Path, timesteps: int, threads: int,
                 env: dict[str, str], log: IO[str]) -> subprocess.Popen[str]:
    """The SpikingJelly worker of one network (its stderr to ``log``), waiting for ``run``."""
    return subprocess.Popen([sj_python, str(HERE / "sj_worker.py"), str(graph), str(x),
                             str(timesteps), str(threads)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=log, text=True, env=env)


def worker_run(worker: subprocess.Popen[str]) -> dict | None:
    """One timed SpikingJelly pass (its JSON answer), or None if the worker failed."""
    if worker.stdin is None or worker.stdout is None:
        return None
    try:
        worker.stdin.write("run\n")
        worker.stdin.flush()
    except BrokenPipeError:
        return None
    line = worker.stdout.readline()
    return json.loads(line) if line.strip() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches")
    parser.add_argument("-T", type=int, default=64, help="time steps (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="threads of each (default 2)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs of each tool per network, interleaved (default 5)")
    parser.add_argument("--nets", default="",
                        help="comma-separated network names to run (default: all)")
    parser.add_argument("--mnist", type=Path, default=ROOT / "models",
                        help="folder of mnist_*.onnx, mnist_calib.npz, mnist_test.npz")
    args = parser.parse_args()
    wanted = {n for n in args.nets.split(",") if n}
    warnings.filterwarnings("ignore", message="MaxPool .* replaced by average pooling")
    sj_python = subprocess.run(["bash", str(HERE / "setup_spikingjelly.sh")], check=True,
                               capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE",
               ONNX2SNN_THREADS=str(args.threads))
    os.environ["ONNX2SNN_THREADS"] = str(args.threads)
    gemm = gemm_macs_per_second()
    print(f"float32 GEMM rate on this machine: {gemm / 1e9:.1f} G MAC/s; T={args.T}, "
          f"{args.threads} threads each, {args.repeats} interleaved runs each; load average "
          f"{os.getloadavg()[0]:.1f} at the start; OpenBLAS thread timeout 2^{thread_timeout()} "
          f"cycles (onnx2snn.blas)")
    print(f"{'network':<18} {'batch':>5} {'M MACs':>7} {'rate':>5} {'onnx2snn':>10} "
          f"{'SpikingJelly':>12} {'ratio':>6} {'(min-max)':>11} {'of bound':>8} {'same':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, calib, x, batch in networks(args.quick, args.mnist):
            if wanted and name not in wanted:
                continue
            snn = convert(model, calib, Recipe(maxpool="avg")).snn  # type: ignore[arg-type]
            macs = snn.macs()
            simulate(snn, x[:2], 2)  # sessions and caches, not timed
            gpath, xpath = Path(tmp) / f"{name}.npz", Path(tmp) / f"{name}_x.npy"
            export_graph(snn, gpath)
            np.save(xpath, x)
            log = (Path(tmp) / f"{name}.log").open("w+")
            worker = start_worker(sj_python, gpath, xpath, args.T, args.threads, env, log)
            ours: list[float] = []
            theirs: list[float] = []
            sj: dict | None = None
            for i in range(args.repeats):
                for side in ("ours", "sj") if i % 2 == 0 else ("sj", "ours"):  # alternate order
                    if side == "ours":
                        t = time.perf_counter()
                        r = simulate(snn, x, args.T)
                        ours.append(time.perf_counter() - t)
                    else:
                        sj = worker_run(worker)
                        if sj is not None:
                            theirs.append(sj["seconds"])
            worker.communicate()
            log.seek(0)
            err = log.read().strip().splitlines() or ["?"]
            log.close()
            if sj is None or len(theirs) < args.repeats:
                print(f"{name:<18} SpikingJelly failed: {err[-1]}")
                continue
            (pred,) = r.predictions.values()
            same = float((np.array(sj["classes"]) == pred[-1].reshape(len(x), -1).argmax(1))
                         .mean())
            ratios = np.array(theirs) / np.array(ours)  # per round: our rate / theirs
            rate_ours = len(x) * args.T / float(np.median(ours))
            rate_sj = len(x) * args.T / float(np.median(theirs))
            print(f"{name:<18} {batch:>5} {macs / 1e6:>7.2f} {r.firing_rate():>5.3f} "
                  f"{rate_ours:>10,.0f} {rate_sj:>12,.0f} {np.median(ratios):>6.2f} "
                  f"{f'({ratios.min():.2f}-{ratios.max():.2f})':>11} "
                  f"{rate_ours * macs / gemm:>8.3f} {100 * same:>5.1f}%", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end. rate: spikes per neuron and step; "
          "onnx2snn, SpikingJelly: images·steps per second (median of the runs); ratio: median "
          "over rounds of onnx2snn / SpikingJelly, in brackets its smallest and largest; of "
          "bound: onnx2snn / (GEMM rate / MACs per image·step); same: same class at step T")


if __name__ == "__main__":
    main()
