"""Accuracy against T for the bundled models under a few recipes, as a Markdown table.

    ./dev shell python benchmarks/accuracy_vs_T.py > /tmp/digits.md              # digits models
    ./dev shell python benchmarks/accuracy_vs_T.py --models mnist > /tmp/mnist.md  # MNIST models
    ./dev shell python benchmarks/accuracy_vs_T.py --models mnist_resnet --recipes default,v0-half \\
        --images 200 --ts 4,8,16,32

``--models`` takes model names or the sets ``digits`` and ``mnist``; ``--recipes`` names from
``RECIPES`` (or ``all``). The ANN column is onnxruntime on the original ONNX file over the same
images; SNN columns are the reference simulator (ideal schedule, direct input) read at each T of
one run to the largest T. A last column gives the seconds the row took (conversion with its
calibration passes plus simulation) on this machine: compare them within one run only.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from onnx2snn.backends.numpy import simulate
from onnx2snn.convert import Recipe, convert
from onnx2snn.evaluate import accuracy
from onnx2snn.oracle import onnxruntime_outputs

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
MODEL_SETS = {
    "digits": ["digits_mlp", "digits_cnn", "digits_cnn_clip", "digits_resnet", "digits_dwsep"],
    "mnist": ["mnist_vgg", "mnist_resnet", "mnist_mobilenet", "mnist_inception"],
}
# label -> (CLI flags, recipe)
RECIPES = {
    "default": ("(none)", Recipe()),
    "v0-half": ("--v0 half", Recipe(v0="half")),
    "v0-half-bc": ("--v0 half --bias-correction", Recipe(v0="half", bias_correction=True)),
    "v0-cal8": ("--v0 calibrated --correction-steps 8",
                Recipe(v0="calibrated", correction_steps=8)),
    "v0-cal-bc": ("--v0 calibrated --bias-correction",
                  Recipe(v0="calibrated", bias_correction=True)),
    "channel": ("--norm channel-percentile", Recipe(norm="channel-percentile")),
    "p99.99": ("--percentile 99.99", Recipe(percentile=99.99)),
    # λ from calibration instead of a ReLU6/Clip ceiling (changes only nets with ceilings)
    "no-ceiling": ("--no-ceiling", Recipe(use_ceiling=False)),
    "no-ceiling-v0-half": ("--no-ceiling --v0 half", Recipe(use_ceiling=False, v0="half")),
    # max pooling as gain-corrected average pooling (what Loihi and NIR need)
    "maxpool-avg": ("--maxpool avg", Recipe(maxpool="avg")),
    "maxpool-avg-v0-half": ("--maxpool avg --v0 half", Recipe(maxpool="avg", v0="half")),
}
DEFAULT_RECIPES = {
    "digits": ["default", "v0-half", "v0-half-bc", "v0-cal-bc", "v0-cal8"],
    "mnist": ["default", "v0-half", "v0-cal-bc", "channel", "p99.99"],
}
DEFAULT_TS = {"digits": [1, 2, 4, 8, 16, 32, 64, 128], "mnist": [4, 8, 16, 32, 64, 128]}


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits",
                        help="comma-separated model names or sets (digits, mnist)")
    parser.add_argument("--recipes", default=None,
                        help=f"comma-separated from {', '.join(RECIPES)}, or all "
                             "(default: a set per model family)")
    parser.add_argument("--ts", type=_ints, default=None, help="comma-separated time steps")
    parser.add_argument("--images", type=int, default=None,
                        help="use the first N test images (default: all)")
    parser.add_argument("--batch-size", type=int, default=50,
                        help="images simulated at once (bounds memory)")
    args = parser.parse_args()

    names = [m for part in args.models.split(",") for m in MODEL_SETS.get(part, [part])]
    family = "mnist" if all(n.startswith("mnist") for n in names) else "digits"
    labels = (list(RECIPES) if args.recipes == "all" else
              args.recipes.split(",") if args.recipes else DEFAULT_RECIPES[family])
    ts = args.ts or DEFAULT_TS[family]
    unknown = [label for label in labels if label not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")

    print("| model | flags | ANN | " + " | ".join(f"T={t}" for t in ts) + " | seconds |")
    print("| --- | --- | ---: | " + " | ".join("---:" for _ in ts) + " | ---: |")
    for name in names:
        data = name.split("_")[0]
        calib = np.load(MODELS_DIR / f"{data}_calib.npz")["x"]
        test = np.load(MODELS_DIR / f"{data}_test.npz")
        x, y = test["x"][:args.images], test["y"][:args.images]
        path = MODELS_DIR / f"{name}.onnx"
        ann_acc = accuracy(onnxruntime_outputs(path, x), y)
        for label in labels:
            flags, recipe = RECIPES[label]
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                conv = convert(path, calib, recipe)
            (pred,) = simulate(conv.snn, x, max(ts), batch_size=args.batch_size).predictions.values()
            accs = [accuracy(pred[t - 1], y) for t in ts]
            print(f"| {name} | {flags} | {100 * ann_acc:.2f} | "
                  + " | ".join(f"{100 * a:.2f}" for a in accs)
                  + f" | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
