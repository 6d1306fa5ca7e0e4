"""Calibration at scale: time and peak memory of collecting activation statistics.

Calibrates the onnx package's light ResNet-50 (224×224×3, seeded random weights) on N random
images (default 512) with ``onnx2snn.convert.calibrate.collect_stats`` under a memory budget
(default 4GB), and prints the wall time, the batch size the budget allowed, the peak RSS of the
process (``ru_maxrss``, Python, the model and onnxruntime included) and how many activations the
statistics hold. The frontend's conversion of the ONNX file is not timed.

    ./dev shell python benchmarks/bench_calibration.py [--images 512] [--memory 4GB]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from onnx2snn.backends.numpy.memory import parse_memory
from onnx2snn.convert.calibrate import calibration_batch, collect_stats
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.samples import randomized_light_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--memory", default="4GB")
    parser.add_argument("--model", default="resnet50", help="a light model of the onnx package")
    args = parser.parse_args()
    ann = onnx_to_ann(randomized_light_model(args.model))
    shape = ann[ann.inputs[0]].shape
    x = np.random.default_rng(0).uniform(0, 1, (args.images,) + shape).astype(np.float32)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    batch = calibration_batch(ann, np.float32, parse_memory(args.memory), 256)
    t = time.perf_counter()
    stats = collect_stats(ann, x, memory=args.memory)
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kept = sum(p.size for s in stats.values() for p in s.positives)
    print(f"{args.model}: {args.images} images {shape}, {ann.macs() / 1e9:.2f} G MACs each, "
          f"{len(stats)} ReLU layers, budget {args.memory}")
    print(f"  calibration: {dt:.1f} s ({args.images / dt:.1f} images/s), batch {batch}")
    print(f"  peak RSS {rss / 2**30:.2f} GiB (before calibrating: {rss0 / 2**30:.2f} GiB, "
          f"the model and inputs)")
    print(f"  statistics hold {kept:,} positive activations ({kept * 4 / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
