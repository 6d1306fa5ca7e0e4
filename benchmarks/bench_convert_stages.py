"""``convert`` at scale: time and peak memory of each stage of converting a ResNet-50.

Writes the onnx package's light ResNet-50 (224×224×3, seeded random weights) and N random
calibration images (default 64) to a temporary folder, then runs the stages of ``onnx2snn
convert MODEL --calib CALIB -o OUT`` (target numpy, default options) one by one, calling the same
library functions as the CLI in the same order, and prints per stage the wall and CPU time and the
peak RSS during the stage (Linux's VmHWM, reset through /proc/self/clear_refs before each stage):

* load: read and check the ONNX file (``load_model``); frontend: the ANN graph
  (``convert_model``) and onnxruntime's loading of the file (``reference_note``);
* data: the calibration file (``load_dataset``); search: the default recipe search's decision
  (``default_search_skipped``: skipped over its MAC budget, as on any ResNet-50);
* prepare: ``prepare_ann``; calibrate: ``collect_stats``; build: ``build_snn`` (λ, threshold
  balancing and the recipe's corrections);
* write: the backend's check and the output folder (``write_output_folder``).

Then it runs the CLI itself on the same files for the total. On a shared machine compare the
stages of one run (their shares of the total), not absolute times between runs.

    ./dev shell python benchmarks/bench_convert_stages.py [--images 64]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnx2snn.artifacts import write_output_folder
from onnx2snn.backends import get_backend
from onnx2snn.convert.auto import default_search_skipped
from onnx2snn.convert.calibrate import collect_stats
from onnx2snn.convert.pipeline import build_snn, prepare_ann
from onnx2snn.convert.profiles import profile_for
from onnx2snn.data import load_dataset
from onnx2snn.frontend import convert_model, load_model
from onnx2snn.oracle import chosen_output, reference_note
from onnx2snn.samples import randomized_light_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import peak, reset_peak  # noqa: E402


def stage(rows: list[tuple[str, float, float, int]], name: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` as one stage and record (name, wall s, CPU s, peak RSS bytes)."""
    reset_peak()
    t, cpu = time.perf_counter(), time.process_time()
    out = fn()
    rows.append((name, time.perf_counter() - t, time.process_time() - cpu,
                 peak()))
    print(f"  {name} done", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--model", default="resnet50", help="a light model of the onnx package")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="onnx2snn-bench-"))
    model_path, calib_path = tmp / f"{args.model}.onnx", tmp / "calib.npz"
    onnx.save(randomized_light_model(args.model), str(model_path))
    rows: list[tuple[str, float, float, int]] = []
    profile = profile_for("numpy")
    recipe = profile.recipe
    loaded = stage(rows, "load", lambda: load_model(model_path))
    ann = stage(rows, "frontend", lambda: convert_model(loaded))
    stage(rows, "onnxruntime load (reference_note)",
          lambda: reference_note(model_path, chosen_output(ann.meta)))
    shape = ann[ann.inputs[0]].shape
    x = np.random.default_rng(0).uniform(0, 1, (args.images,) + shape).astype(np.float32)
    np.savez(calib_path, x=x)
    del x
    calib = stage(rows, "data", lambda: load_dataset(calib_path, shape, limit=512))
    note = stage(rows, "search decision",
                 lambda: default_search_skipped(ann, len(calib.x), profile, recipe))
    prepared = stage(rows, "prepare", lambda: prepare_ann(ann, calib.x, recipe))
    stats = stage(rows, "calibrate", lambda: collect_stats(prepared, calib.x))
    conv = stage(rows, "build", lambda: build_snn(prepared, stats, recipe, calib.x))
    backend = get_backend("numpy")
    stage(rows, "write", lambda: (backend.check(conv.snn), write_output_folder(
        tmp / "out", conv.snn, str(model_path), {"target": "numpy", "recipe": recipe.to_dict(),
                                                 "source_sha256": loaded.sha256},
        extra=lambda folder: backend.emit(conv.snn, folder))))
    total = sum(r[1] for r in rows)
    print(f"{args.model}: {args.images} random calibration images {shape}, "
          f"{ann.macs() / 1e9:.2f} G MACs each; recipe search: {note or 'would run'}")
    print(f"load average {os.getloadavg()[0]:.1f}")
    print("| stage | wall | CPU | share of wall | peak RSS |")
    print("|---|---:|---:|---:|---:|")
    for name, wall, cpu, rss in rows:
        print(f"| {name} | {wall:.1f} s | {cpu:.1f} s | {100 * wall / total:.0f} % | "
              f"{rss / 2**30:.2f} GiB |")
    t = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "onnx2snn", "convert", str(model_path), "--calib",
                          str(calib_path), "-o", str(tmp / "out_cli"), "-q"],
                         capture_output=True, text=True)
    print(f"the CLI on the same files: {time.perf_counter() - t:.1f} s, exit code "
          f"{cli.returncode}{'' if cli.returncode == 0 else ': ' + cli.stderr[-500:]}")
    subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    main()
