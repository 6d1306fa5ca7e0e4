"""Loihi 2 accuracy of convert's default conversion, run in Lava itself, next to the reference.

For each bundled digits model and each Loihi neuron (sdnn, lif, if-subtract), the model is
converted exactly as a user would, with default flags:

    onnx2snn convert models/digits_<model>.onnx --target loihi --neuron <neuron>
        --calib models/digits_calib.npz -o <tmp>

(so with the neuron profile's recipe search), and the quantized network it wrote,
``loihi_network.snn``, runs

* in Lava itself: ``LavaNetwork`` (lava-nc's CPU simulator, ``Loihi2SimCfg``, ``fixed_pt``, the
  network ``evaluate --backend lava`` runs) on the first ``--images`` test images, ``-T`` steps;
* in the bit-exact fixed-point reference (``simulate_fixed``) on all 540 test images;

next to the ANN (onnxruntime on the original file, all test images). Printed per model and
neuron: the recipe the search chose, accuracy at each T of ``--read`` for the reference (all
images), for Lava and for the reference on the images Lava ran, whether Lava equals the reference
spike for spike (every population's messages and the integer currents into the readout, at every
step, on those images: the count of differing messages), and Lava's wall time per image (and,
in brackets, for the first image, which compiles the network and starts Lava's processes).
T is counted from the first input step; the answer needs the network's latency (one step per
synapse layer) to arrive. Exit status 1 when Lava differs from the reference anywhere.

    .venv/bin/python benchmarks/loihi_accuracy.py                       # about 10 min, 2 cores
    .venv/bin/python benchmarks/loihi_accuracy.py --models mlp --images 20 -T 16 --read 8,16
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from onnx2snn.artifacts import read_output_folder
from onnx2snn.backends.loihi.network import LavaNetwork
from onnx2snn.backends.numpy.fixed_point import simulate_fixed
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.loihi import LoihiNeuron
from onnx2snn.ir.serialize import load_graph
from onnx2snn.oracle import onnxruntime_outputs

MODELS = Path(__file__).resolve().parents[1] / "models"
NEURONS = ("sdnn", "lif", "if-subtract")
# Lava runs ~20 ms per image·step for the MLP and ~110 ms for the CNN on 2 cores (docs/loihi.md):
# these image counts keep the default run near 10 minutes
DEFAULT_IMAGES = {"mlp": 100, "cnn": 36, "mnist_resnet": 2, "mnist_mobilenet": 2}


def model_files(model: str) -> tuple[Path, Path, Path]:
    """(ONNX file, calibration data, test data) of a bundled model: ``mlp`` is the digits MLP
    (models/digits_mlp.onnx), ``mnist_resnet`` the MNIST ResNet (models/mnist_resnet.onnx)."""
    data = "mnist" if model.startswith("mnist_") else "digits"
    name = model if data == "mnist" else f"digits_{model}"
    return MODELS / f"{name}.onnx", MODELS / f"{data}_calib.npz", MODELS / f"{data}_test.npz"


def convert_default(model: str, neuron: str, out: Path, maxpool: str | None = None
                    ) -> dict[str, Any]:
    """``onnx2snn convert`` with default flags for ``--target loihi --neuron`` (and ``--maxpool``
    when given); its manifest."""
    onnx_file, calib, _ = model_files(model)
    cmd = [sys.executable, "-m", "onnx2snn", "convert", str(onnx_file),
           "--target", "loihi", "--neuron", neuron, "--calib", str(calib),
           "-o", str(out), "--quiet"] + (["--maxpool", maxpool] if maxpool else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return read_output_folder(out).manifest


def lava_mismatches(q: Graph, lava: dict[str, np.ndarray], ref: Any) -> tuple[int, int]:
    """(messages that differ, messages compared) between a Lava run and the reference's record.

    Lava's sink holds what a population sends at step t, the reference records what its synapses
    receive, at t + 1; the readout sinks hold the integer currents the reference records on the
    synapse node that feeds the readout."""
    differ = compared = 0
    for n in q.nodes:
        if isinstance(n, LoihiNeuron):
            a, b = lava[n.name][:-1], ref.recorded[n.name][1:]
        elif n.name in q.outputs:
            a, b = lava[n.name], ref.recorded[n.inputs[0]]
        else:
            continue
        differ += int(np.count_nonzero(a != b))
        compared += int(b.size)
    return differ, compared


def accuracies(pred: np.ndarray, y: np.ndarray, reads: list[int]) -> list[float]:
    """Accuracy (%) of predictions (T, N, classes) at each step count in ``reads``."""
    return [100.0 * float((pred[t - 1].argmax(-1) == y).mean()) for t in reads]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,cnn",
                    help="digits models (m: models/digits_<m>.onnx) or MNIST models "
                    "(mnist_<m>: models/mnist_<m>.onnx)")
    ap.add_argument("--maxpool", choices=("gate", "avg"), default=None,
                    help="convert's --maxpool (Loihi needs avg for max-pooling nets)")
    ap.add_argument("--neurons", default=",".join(NEURONS))
    ap.add_argument("--images", type=int, default=None,
                    help=f"test images run in Lava per model (default {DEFAULT_IMAGES})")
    ap.add_argument("-T", "--timesteps", type=int, default=32, help="steps of every run")
    ap.add_argument("--read", default="8,16,32", help="step counts at which accuracy is read")
    args = ap.parse_args()
    reads = [int(t) for t in args.read.split(",") if int(t) <= args.timesteps]
    steps = args.timesteps
    ts = "/".join(str(t) for t in reads)
    print(f"Lava fixed_pt vs the fixed-point reference, convert's default flags; accuracy (%) at "
          f"T = {ts}; reference on all test images, Lava on the first N\n")
    print("| model (ANN %, test images) | neuron | chosen recipe | reference, all | Lava, first N "
          "| reference, first N | N | Lava = reference | Lava s/image (start) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: |", flush=True)
    failed = False
    for model in args.models.split(","):
        onnx_file, _, test_file = model_files(model)
        test = np.load(test_file)
        x_all, y = test["x"], test["y"]
        ann_acc: float | None = None
        n = args.images or DEFAULT_IMAGES.get(model, 20)
        for neuron in args.neurons.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                manifest = convert_default(model, neuron, Path(tmp) / "out", args.maxpool)
                q = load_graph(Path(tmp) / "out" / "loihi_network.snn")
            x = x_all.reshape((len(x_all),) + q[q.inputs[0]].shape)
            if ann_acc is None:
                ann = onnxruntime_outputs(onnx_file, x)
                ann_acc = 100.0 * float((ann.argmax(-1) == y).mean())
            (o,) = q.outputs
            pops = [m.name for m in q.nodes if isinstance(m, LoihiNeuron)]
            ref = simulate_fixed(q, x, steps)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="pandas not found",
                                        category=ImportWarning)
                with LavaNetwork(q, steps, "fixed_pt") as net:
                    t0 = time.perf_counter()
                    first = net.run(x[:1])  # compiles and starts the runtime
                    t1 = time.perf_counter()
                    rest = net.run(x[1:n]) if n > 1 else {k: v[:, :0] for k, v in first.items()}
                    t2 = time.perf_counter()
            lava = {k: np.concatenate([first[k], rest[k]], axis=1) for k in first}
            start_s, lava_s = t1 - t0, (t2 - t1) / max(n - 1, 1)
            ref_n = simulate_fixed(q, x[:n], steps, record=pops + [q[o].inputs[0]])
            differ, compared = lava_mismatches(q, lava, ref_n)
            pred = q[o].predict(lava[o])  # type: ignore[attr-defined]
            differ_pred = int(np.count_nonzero(pred != ref_n.predictions[o]))
            failed |= differ > 0 or differ_pred > 0
            same = (f"yes ({compared:,} messages)" if differ == 0 and differ_pred == 0 else
                    f"**no**: {differ:,} of {compared:,} messages, {differ_pred} predictions")
            recipe = ((manifest.get("recipe_search") or {}).get("chosen")
                      or "profile's (search skipped)")

            def fmt(a: list[float]) -> str:
                return " / ".join(f"{v:.1f}" for v in a)

            print(f"| {model} ({ann_acc:.2f}, {len(y)}) | {neuron} | {recipe} | "
                  f"{fmt(accuracies(ref.predictions[o], y, reads))} | "
                  f"{fmt(accuracies(pred, y[:n], reads))} | "
                  f"{fmt(accuracies(ref_n.predictions[o], y[:n], reads))} | {n} | {same} | "
                  f"{lava_s:.2f} ({start_s:.1f}) |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
