"""Accuracy against T with the default conversion (``--recipe auto``) per target neuron.

    ./dev shell python benchmarks/recipes.py                      # every bundled model, numpy
    ./dev shell python benchmarks/recipes.py --profile nir-zero   # reset to zero (NIR IF)
    ./dev shell python benchmarks/recipes.py --models digits_dwsep --search-table

For every model: the ANN's test accuracy (onnxruntime on the ONNX file), the SNN's at each T
(reference simulator, ideal schedule, direct input; one run to the largest T), the drop at T=32,
the recipe the search chose and what the search cost (seconds, the whole conversion). The search
sees only the calibration file (``models/<set>_calib.npz``); the figures are on the test file.
``--search-table`` also prints what the search tried. ``--timesteps T`` searches for T.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from onnx2snn.backends.numpy import simulate
from onnx2snn.convert import Recipe
from onnx2snn.convert.auto import RecipeSearch, search_recipe
from onnx2snn.convert.pipeline import Conversion
from onnx2snn.convert.profiles import PROFILES, NeuronProfile
from onnx2snn.evaluate import EvalRow, accuracy, smallest_t_within
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.oracle import onnxruntime_outputs

MODELS = Path(__file__).resolve().parents[1] / "models"
TS = [1, 2, 4, 8, 16, 32, 64, 128]


def bundled(folder: Path) -> list[str]:
    """The bundled classifiers, digits first, then MNIST when its data are there."""
    names = sorted(p.stem for p in folder.glob("digits_*.onnx"))
    if (folder / "mnist_calib.npz").is_file():
        names += sorted(p.stem for p in folder.glob("mnist_*.onnx"))
    return names


def convert_default(path: Path, calib: np.ndarray, profile: NeuronProfile, maxpool: str = "gate",
                    timesteps: int | None = None) -> tuple[Conversion, RecipeSearch]:
    """What ``onnx2snn convert`` does by default: the recipe search for ``profile``'s neuron."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return search_recipe(onnx_to_ann(path), calib, profile, Recipe(maxpool=maxpool),
                             timesteps=timesteps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated names (default: all bundled)")
    ap.add_argument("--profile", default="numpy", choices=list(PROFILES))
    ap.add_argument("--timesteps", "-T", type=int, default=None)
    ap.add_argument("--maxpool", default="gate", choices=["gate", "avg"])
    ap.add_argument("--limit", type=int, default=None, help="first N test samples")
    ap.add_argument("--search-table", action="store_true")
    ap.add_argument("--dir", type=Path, default=MODELS, help="folder of the models and data")
    args = ap.parse_args()
    names = args.models.split(",") if args.models else bundled(args.dir)
    profile = PROFILES[args.profile]
    print(f"profile {profile.name} (reset: {profile.reset}), --recipe auto"
          + (f" -T {args.timesteps}" if args.timesteps else "") + f", --maxpool {args.maxpool}")
    print("")
    print("| model | ANN | " + " | ".join(f"T={t}" for t in TS)
          + " | drop at T=32 (pp) | T within 1 pp | chosen recipe | convert (s) |")
    print("| --- | ---: | " + " | ".join("---:" for _ in TS) + " | ---: | ---: | --- | ---: |")
    tables = []
    for name in names:
        data = name.split("_")[0]
        calib = np.load(args.dir / f"{data}_calib.npz")["x"][:512]
        test = np.load(args.dir / f"{data}_test.npz")
        x, y = test["x"][:args.limit], test["y"][:args.limit]
        path = args.dir / f"{name}.onnx"
        ann_acc = accuracy(onnxruntime_outputs(path, x), y)
        assert ann_acc is not None
        start = time.perf_counter()
        conv, search = convert_default(path, calib, profile, args.maxpool, args.timesteps)
        seconds = time.perf_counter() - start
        pred = simulate(conv.snn, x, TS[-1], batch_size=256).predictions[conv.snn.outputs[0]]
        accs = [accuracy(pred[t - 1], y) or 0.0 for t in TS]
        rows = [EvalRow(t, a, None, None, 0.0, 0.0) for t, a in zip(TS, accs)]
        within = smallest_t_within(rows, ann_acc)["1"]
        print(f"| {name} | {100 * ann_acc:.2f} | " + " | ".join(f"{100 * a:.2f}" for a in accs)
              + f" | {100 * (ann_acc - accs[TS.index(32)]):.2f} | {within or '-'} | "
              f"{search.chosen} | {seconds:.0f} |", flush=True)
        tables.append((name, search))
    if args.search_table:
        for name, search in tables:
            print(f"\n### {name}\n\n{search.format()}")


if __name__ == "__main__":
    main()
