"""Accuracy against T for every bundled digits model and a few recipes, as a Markdown table.

    ./dev shell python benchmarks/accuracy_vs_T.py > /tmp/table.md

The ANN column is onnxruntime on the original ONNX file; SNN columns are the reference simulator
(ideal schedule, direct input) read at each T of one run to the largest T.
"""

from __future__ import annotations

import numpy as np

from onnx2snn.backends.numpy import simulate
from onnx2snn.convert import Recipe, convert
from onnx2snn.evaluate import accuracy
from onnx2snn.oracle import onnxruntime_outputs

MODELS = ["digits_mlp", "digits_cnn", "digits_cnn_clip", "digits_resnet", "digits_dwsep"]
RECIPES = {
    "p99.9, v0=0": Recipe(),
    "p99.9, v0=θ/2": Recipe(v0="half"),
    "p99.9, v0=θ/2, bias corr.": Recipe(v0="half", bias_correction=True),
    "p99.9, v0 calibrated (8 steps)": Recipe(v0="calibrated", correction_steps=8),
}
TS = [1, 2, 4, 8, 16, 32, 64, 128]


def main() -> None:
    calib = np.load("models/digits_calib.npz")["x"]
    test = np.load("models/digits_test.npz")
    x, y = test["x"], test["y"]
    print("| model | recipe | ANN | " + " | ".join(f"T={t}" for t in TS) + " |")
    print("| --- | --- | ---: | " + " | ".join("---:" for _ in TS) + " |")
    for name in MODELS:
        path = f"models/{name}.onnx"
        ann_acc = accuracy(onnxruntime_outputs(path, x), y)
        for label, recipe in RECIPES.items():
            conv = convert(path, calib, recipe)
            (pred,) = simulate(conv.snn, x, TS[-1]).predictions.values()
            accs = [accuracy(pred[t - 1], y) for t in TS]
            print(f"| {name} | {label} | {100 * ann_acc:.2f} | "
                  + " | ".join(f"{100 * a:.2f}" for a in accs) + " |", flush=True)


if __name__ == "__main__":
    main()
