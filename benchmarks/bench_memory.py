"""Peak memory and speed of the reference simulator against T and batch, on real-size networks.

For a CIFAR-size ResNet-18 (32×32×3, 555 M MACs per image·step) and the onnx package's light
ResNet-50 (224×224×3, 4.1 G MACs), both with seeded random weights (``nets.py``), it converts
the network once (calibrating on a few random images), then simulates a grid of (batch, T),
each in a fresh process so that its peak RSS (``parallel.peak_rss``, Linux's VmHWM: everything
the process held, Python and the model included) is its own. Direct input, ideal schedule,
float32. Printed per row: peak RSS, wall time, images·steps per second, the ratio to the dense
bound (this machine's float32 GEMM rate, measured in the same run, divided by the MACs per
image·step), and the plan the simulator chose (samples and steps at once). Rows marked
``whole`` run with streaming off (an unlimited budget: all T steps of the batch at once, as the
simulator did before streaming) to show what the budget saves.

    ./dev shell python benchmarks/bench_memory.py [--quick] [--memory 1GB]

Timings on a shared machine are noisy: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".models"
UNLIMITED = "1TB"  # the budget of the "whole" rows: streaming off
sys.path.insert(0, str(HERE))

from bench_simulator import gemm_macs_per_second  # noqa: E402


def converted(name: str) -> tuple[Path, tuple[int, ...], int]:
    """The converted SNN graph file of ``name`` (made once, kept in benchmarks/.models/)."""
    from nets import cifar_resnet18, light_resnet50

    from onnx2snn.convert import Recipe, convert
    from onnx2snn.ir.serialize import load_graph, save_graph

    path = CACHE / f"{name}.snn"
    model, shape = cifar_resnet18() if name == "resnet18" else light_resnet50()
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        x = np.random.default_rng(1).uniform(0, 1, (8,) + shape).astype(np.float32)
        save_graph(convert(model, x, Recipe()).snn, path)
    return path, shape, load_graph(path).macs()


def one_run(path: str, batch: int, timesteps: int, memory: str) -> dict[str, object]:
    """Simulate in this process; what the parent prints (peak RSS of this process)."""
    from onnx2snn.backends.numpy import simulate
    from onnx2snn.ir.serialize import load_graph
    from onnx2snn.parallel import peak_rss

    graph = load_graph(path)
    shape = graph[graph.inputs[0]].shape
    x = np.random.default_rng(2).uniform(0, 1, (batch,) + shape).astype(np.float32)
    simulate(graph, x[:1], 1)  # onnxruntime sessions are made here, not timed
    t = time.perf_counter()
    # "whole" (an unlimited budget) runs the whole batch and all T steps at once: an explicit
    # chunk, since without one the plan also shrinks the cut to a cache-sized working set
    whole = memory == UNLIMITED
    r = simulate(graph, x, timesteps, memory=memory, batch_size=batch if whole else None,
                 chunk=timesteps if whole else None)
    dt = time.perf_counter() - t
    assert r.plan is not None
    return {"seconds": dt, "rss": peak_rss(),
            "batch": r.plan.batch, "chunk": r.plan.chunk, "estimate": r.plan.estimate,
            "firing_rate": r.firing_rate()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller grid")
    parser.add_argument("--memory", default="1GB", help="the simulator's budget (default 1GB)")
    parser.add_argument("--one", nargs=4, metavar=("GRAPH", "B", "T", "MEMORY"),
                        help=argparse.SUPPRESS)  # a child process: one run, JSON on stdout
    args = parser.parse_args()
    if args.one:
        g, b, t, m = args.one
        print(json.dumps(one_run(g, int(b), int(t), m)))
        return
    gemm = gemm_macs_per_second()
    print(f"float32 GEMM rate on this machine: {gemm / 1e9:.1f} G MAC/s; budget {args.memory}")
    grids = {"resnet18": [(16, 8), (16, 32), (16, 128), (64, 32)] if not args.quick
             else [(8, 8), (8, 32)],
             "resnet50": [(2, 8), (2, 32), (4, 32)] if not args.quick else [(1, 8), (1, 16)]}
    whole = {"resnet18": [(16, 8), (16, 32), (16, 64)] if not args.quick else [(8, 8), (8, 32)],
             "resnet50": [(2, 8), (2, 32)] if not args.quick else [(1, 8), (1, 16)]}
    print(f"{'network':<9} {'mode':<7} {'batch':>5} {'T':>4} {'peak RSS':>9} {'time':>8} "
          f"{'img·steps/s':>11} {'ms/img·step':>11} {'of bound':>8}  plan (samples × steps)")
    for name in ("resnet18", "resnet50"):
        path, _, macs = converted(name)
        bound = gemm / macs
        runs = [("stream", b, t, args.memory) for b, t in grids[name]]
        runs += [("whole", b, t, UNLIMITED) for b, t in whole[name]]
        for mode, b, t, mem in runs:
            out = subprocess.run([sys.executable, __file__, "--one", str(path), str(b), str(t),
                                  mem], capture_output=True, text=True, env=os.environ)
            if out.returncode:
                print(f"{name:<9} {mode:<7} {b:>5} {t:>4}  failed: "
                      f"{out.stderr.strip().splitlines()[-1]}")
                continue
            d = json.loads(out.stdout.strip().splitlines()[-1])
            rate = b * t / d["seconds"]
            print(f"{name:<9} {mode:<7} {b:>5} {t:>4} {d['rss'] / 2**20:>7.0f}MB "
                  f"{d['seconds']:>7.1f}s {rate:>11.2f} {1e3 / rate:>11.1f} {rate / bound:>8.3f}"
                  f"  {d['batch']} × {d['chunk']} (est. {d['estimate'] / 2**20:.0f} MB)",
                  flush=True)
        print(f"{name}: {macs / 1e6:,.0f} M MACs per image·step; dense bound "
              f"{bound:.2f} images·steps/s")


if __name__ == "__main__":
    main()
