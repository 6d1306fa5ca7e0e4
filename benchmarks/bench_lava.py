"""Lava (Loihi 2 CPU simulation) against the fixed-point reference simulator, in one run.

For each bundled model and neuron mode: accuracy at T = 8, 16, 32 of the Lava ``fixed_pt`` run on
the first N test images, the reference fixed-point simulator's accuracy on all test images, whether
Lava's predictions equal the reference's on the N images, and the wall time per image·step of both.

    .venv/bin/python benchmarks/bench_lava.py --models mlp,cnn --images 50
    .venv/bin/python benchmarks/bench_lava.py --models resnet_avg --images 30

Models are ``models/digits_<name>.onnx`` converted with the default recipe (``digits_resnet``
itself has a MaxPool, which Loihi refuses: its Loihi counterpart is ``resnet_avg``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from onnx2snn.backends.loihi.network import LavaNetwork
from onnx2snn.backends.numpy.fixed_point import simulate_fixed
from onnx2snn.convert import Recipe, convert
from onnx2snn.quantize import quantize_for_loihi

MODELS = Path(__file__).resolve().parents[1] / "models"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--modes", default="sdnn,lif,if-subtract")
    ap.add_argument("--images", type=int, default=50, help="test images run in Lava")
    ap.add_argument("--timesteps", type=int, default=32)
    args = ap.parse_args()
    cal = np.load(MODELS / "digits_calib.npz")["x"]
    test = np.load(MODELS / "digits_test.npz")
    x, y = test["x"], test["y"]
    T = args.timesteps
    reads = [t for t in (8, 16, 32) if t <= T]
    print(f"{'model':<7} {'mode':<12} {'N':>4} " + " ".join(f"{'lava T=' + str(t):>10}" for t in reads)
          + " " + " ".join(f"{'ref T=' + str(t):>9}" for t in reads)
          + f" {'equal':>6} {'lava ms/img·step':>17} {'ref ms/img·step':>16}")
    for model in args.models.split(","):
        snn = convert(MODELS / f"digits_{model}.onnx", cal, Recipe()).snn
        for mode in args.modes.split(","):
            q = quantize_for_loihi(snn, mode, calib_x=cal).graph
            t0 = time.perf_counter()
            ref = simulate_fixed(q, x, T)
            ref_s = time.perf_counter() - t0
            (o,) = q.outputs
            pr = ref.predictions[o]
            n = min(args.images, len(x))
            t0 = time.perf_counter()
            with LavaNetwork(q, T, "fixed_pt") as net:
                got = net.run(x[:n])
            lava_s = time.perf_counter() - t0
            pl = q[o].predict(got[o])  # type: ignore[attr-defined]
            equal = bool(np.array_equal(pl, pr[:, :n]))
            acc_l = [float((pl[t - 1].argmax(-1) == y[:n]).mean()) for t in reads]
            acc_r = [float((pr[t - 1].argmax(-1) == y).mean()) for t in reads]
            print(f"{model:<7} {mode:<12} {n:>4} " + " ".join(f"{100 * a:>9.1f}%" for a in acc_l)
                  + " " + " ".join(f"{100 * a:>8.1f}%" for a in acc_r)
                  + f" {str(equal):>6} {1e3 * lava_s / (n * T):>17.2f}"
                  f" {1e3 * ref_s / (len(x) * T):>16.4f}", flush=True)


if __name__ == "__main__":
    main()
