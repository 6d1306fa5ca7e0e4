"""Accuracy of SpikingJelly's own ANN-to-SNN converter next to onnx2snn's default conversion.

For each bundled model, on the same test images (digits: the 540 of models/digits_test.npz;
MNIST: the 1000 of models/mnist_test.npz) and the same calibration images
(``models/<set>_calib.npz``):

* onnx2snn: ``onnx2snn convert``'s default (the recipe search of the reference simulator's
  neuron, ``recipes.convert_default``), simulated by the reference simulator (ideal schedule,
  direct input);
* SpikingJelly 2.0.0 (``sj_ann2snn_worker.py`` in .venv-sj, built by ``setup_spikingjelly.sh``):
  the same ANN as a PyTorch module (the graph onnx2snn's frontend reads from the ONNX file,
  BatchNorm folded), converted by ``ann2snn.Converter(RateCodingRecipe(...))`` in its default mode
  (``Max``), in the robust mode of its MNIST example (``99.9%``) and with one λ per channel and
  a half-threshold start (``channel_wise=True, half_threshold=True``), run as its examples run it
  (the analog image every step, outputs summed). Max pooling stays max pooling over spikes
  there, as SpikingJelly converts it.

Prints a Markdown table: per model, the ANN's accuracy (onnxruntime; in brackets PyTorch's when
it differs) and each converter's accuracy at T = 8, 16, 32, 64.

    bash benchmarks/setup_spikingjelly.sh            # once (builds .venv-sj)
    ./dev shell python benchmarks/accuracy_spikingjelly.py [--models digits_cnn,mnist_vgg]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_spikingjelly import export_graph  # noqa: E402
from recipes import MODELS, bundled, convert_default  # noqa: E402

from onnx2snn.backends.numpy import simulate  # noqa: E402
from onnx2snn.convert.profiles import PROFILES  # noqa: E402
from onnx2snn.evaluate import accuracy  # noqa: E402
from onnx2snn.frontend import onnx_to_ann  # noqa: E402
from onnx2snn.oracle import onnxruntime_outputs  # noqa: E402

TS = [8, 16, 32, 64]
SJ_MODES = {"max": "SpikingJelly Max (default)", "99.9%": "SpikingJelly 99.9%",
            "channel-99.9%-half": "SpikingJelly channel 99.9%, v0=θ/2"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated names (default: all bundled)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--dir", type=Path, default=MODELS, help="folder of the models and data")
    args = ap.parse_args()
    names = args.models.split(",") if args.models else bundled(args.dir)
    sj_python = subprocess.run(["bash", str(HERE / "setup_spikingjelly.sh")], check=True,
                               capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE")
    cols = " | ".join(f"T={t}" for t in TS)
    print(f"| model | ANN | converter | {cols} |")
    print("| --- | ---: | --- | " + " | ".join("---:" for _ in TS) + " |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            data = name.split("_")[0]
            calib = np.load(args.dir / f"{data}_calib.npz")["x"][:512]
            test = np.load(args.dir / f"{data}_test.npz")
            x, y = test["x"], test["y"]
            path = args.dir / f"{name}.onnx"
            ann_acc = accuracy(onnxruntime_outputs(path, x), y) or 0.0
            conv, search = convert_default(path, calib, PROFILES["numpy"])
            pred = simulate(conv.snn, x, max(TS), batch_size=256,
                            memory="1GB").predictions[conv.snn.outputs[0]]
            rows = {f"onnx2snn default ({search.chosen})":
                    [accuracy(pred[t - 1], y) or 0.0 for t in TS]}
            files = [Path(tmp) / f"{name}{s}" for s in (".npz", "_calib.npy", "_x.npy", "_y.npy")]
            export_graph(onnx_to_ann(path), files[0])
            for f, a in zip(files[1:], (calib, x, y)):
                np.save(f, a)
            out = subprocess.run([sj_python, str(HERE / "sj_ann2snn_worker.py"),
                                  *map(str, files), str(max(TS)), ",".join(SJ_MODES),
                                  str(args.threads)], capture_output=True, text=True, env=env)
            torch_acc = None
            if out.returncode:
                last = (out.stderr.strip().splitlines() or ["no output"])[-1]
                rows["SpikingJelly failed: " + last] = []
            else:
                sj = json.loads(out.stdout.strip().splitlines()[-1])
                torch_acc = sj["ann"]
                for mode, label in SJ_MODES.items():
                    rows[label] = [sj["modes"][mode][t - 1] for t in TS]
            ann_cell = f"{100 * ann_acc:.2f}"
            if torch_acc is not None and abs(torch_acc - ann_acc) > 1e-9:
                ann_cell += f" ({100 * torch_acc:.2f})"
            for label, accs in rows.items():
                print(f"| {name} | {ann_cell} | {label} | "
                      + " | ".join(f"{100 * a:.2f}" for a in accs) + " |", flush=True)


if __name__ == "__main__":
    main()
