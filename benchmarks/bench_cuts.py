"""How the cut of a simulation into batches × chunks of steps changes its speed (not its bits).

For each network of ``bench_spikingjelly.py`` (the bundled digits nets, the MNIST-size nets,
optionally the CIFAR-size ResNet-18) it times ``simulate`` on the same batch, T steps, with the
largest cut the memory budget allows (the whole batch × all T steps, as the simulator chose
before it aimed at a cache-sized working set), with one step at a time over the whole batch, and
with the cut the plan picks now (``memory.CACHE_TARGET``), interleaved, ``--repeats`` times each,
and prints the median wall time of each, the system time share of the old cut, and whether
all three gave the same predictions bit for bit.

    ./dev shell python benchmarks/bench_cuts.py [-T 64] [--repeats 3] [--nets digits_cnn,...]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_spikingjelly import networks  # noqa: E402

from onnx2snn.backends.numpy import simulate  # noqa: E402
from onnx2snn.convert import Recipe, convert  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-T", type=int, default=64, help="time steps (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each cut (default 3)")
    parser.add_argument("--nets", default="", help="comma-separated names (default: all but "
                        "cifar_resnet18)")
    parser.add_argument("--mnist", type=Path, default=HERE.parent / "models",
                        help="folder of mnist_*.onnx, mnist_calib.npz, mnist_test.npz")
    args = parser.parse_args()
    wanted = {n for n in args.nets.split(",") if n}
    warnings.filterwarnings("ignore", message="MaxPool .* replaced by average pooling")
    print(f"T={args.T}, {args.repeats} runs of each cut, interleaved; load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    print(f"{'network':<18} {'whole':>9} {'s, sys %':>9} {'1 step':>9} {'s':>6} "
          f"{'plan':>9} {'s':>6} {'speed-up':>8} {'same':>5}")
    for name, model, calib, x, _ in networks(False, args.mnist):
        if (wanted and name not in wanted) or (not wanted and name == "cifar_resnet18"):
            continue
        snn = convert(model, calib, Recipe(maxpool="avg")).snn  # type: ignore[arg-type]
        simulate(snn, x[:2], 2)  # sessions, not timed
        n = len(x)
        cuts = {"whole": dict(chunk=args.T, batch_size=n), "step": dict(chunk=1, batch_size=n),
                "plan": {}}
        times: dict[str, list[float]] = {k: [] for k in cuts}
        sys_share: list[float] = []
        preds: dict[str, np.ndarray] = {}
        plans: dict[str, str] = {}
        for _ in range(args.repeats):
            for key, opts in cuts.items():
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                t = time.perf_counter()
                r = simulate(snn, x, args.T, **opts)  # type: ignore[arg-type]
                dt = time.perf_counter() - t
                times[key].append(dt)
                if key == "whole":
                    sys_share.append((resource.getrusage(resource.RUSAGE_SELF).ru_stime
                                      - r0.ru_stime) / dt)
                (preds[key],) = r.predictions.values()
                assert r.plan is not None
                plans[key] = f"{r.plan.batch}×{r.plan.chunk}"
        med = {k: float(np.median(v)) for k, v in times.items()}
        same = all(np.array_equal(preds["whole"], p) for p in preds.values())
        print(f"{name:<18} {plans['whole']:>9} {med['whole']:>5.2f} {100 * np.median(sys_share):>3.0f}"
              f" {plans['step']:>9} {med['step']:>6.2f} {plans['plan']:>9} {med['plan']:>6.2f} "
              f"{med['whole'] / med['plan']:>8.1f} {'yes' if same else 'NO':>5}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end. Columns: the cut (batch × chunk "
          "of steps) and median wall seconds of the whole batch × all steps, one step at a time, "
          "and the plan's cut; sys %: system time share of the whole cut; speed-up: whole / plan")


if __name__ == "__main__":
    main()
