"""Calibration at scale: time and peak memory of collecting activation statistics, per budget.

Calibrates the onnx package's light ResNet-50 (224×224×3, seeded random weights) on N random
images (default 512) with ``onnx2snn.convert.calibrate.collect_stats`` under each memory budget
given (default 1GB, 2GB, 3GB, 4GB), each in a fresh process, and prints per budget: the batch size
the budget allowed, calibration's own estimate (``calibration_memory``), the peak resident memory
calibration added to the process (peak RSS during calibration minus the RSS just before it: the
graph and the inputs are already resident; Linux's VmHWM, reset through /proc/self/clear_refs),
the wall and CPU time, and the time per image. The frontend's conversion of the ONNX file is not
timed. On a shared machine compare the rows of one run (ms per image, peak against budget), not
absolute times between runs.

    ./dev shell python benchmarks/bench_calibration.py [--images 512] [--memory 1GB,2GB,4GB]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from onnx2snn.backends.numpy.memory import parse_memory
from onnx2snn.convert.calibrate import calibration_batch, calibration_memory, collect_stats
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.samples import randomized_light_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import peak, reset_peak, rss  # noqa: E402


def one_budget(model: str, images: int, memory: str) -> None:
    """Calibrate under one budget in this process and print one table row."""
    ann = onnx_to_ann(randomized_light_model(model))
    shape = ann[ann.inputs[0]].shape
    x = np.random.default_rng(0).uniform(0, 1, (images,) + shape).astype(np.float32)
    budget = parse_memory(memory)
    batch = calibration_batch(ann, np.float32, budget, 256)
    fixed, per_sample = calibration_memory(ann, np.float32)
    reset_peak()
    before = rss()
    t, cpu = time.perf_counter(), time.process_time()
    stats = collect_stats(ann, x, memory=budget)
    dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
    added = peak() - before
    kept = sum(p.size for s in stats.values() for p in s.positives)
    gib = 2**30
    print(f"| {memory} | {batch} | {(fixed + batch * per_sample) / gib:.2f} GiB | "
          f"{added / gib:.2f} GiB | {before / gib:.2f} GiB | {dt:.1f} s | {dcpu:.1f} s | "
          f"{1000 * dt / images:.0f} | {kept * 4 / 2**20:.0f} MiB |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--memory", default="1GB,2GB,3GB,4GB",
                        help="comma-separated budgets, each run in a fresh process")
    parser.add_argument("--model", default="resnet50", help="a light model of the onnx package")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_budget(args.model, args.images, args.memory)
        return
    ann = onnx_to_ann(randomized_light_model(args.model))
    print(f"{args.model}: {args.images} random images {ann[ann.inputs[0]].shape}, "
          f"{ann.macs() / 1e9:.2f} G MACs each, float32, load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    print("| --memory | batch | estimate | peak added | RSS before | wall | CPU | ms / image "
          "| statistics |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for memory in args.memory.split(","):
        subprocess.run([sys.executable, __file__, "--one", "--images", str(args.images),
                        "--memory", memory, "--model", args.model], check=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
