"""Sharded evaluation: one process against ``--workers N`` processes against a local Ray cluster.

Converts the bundled digits CNN (models/digits_cnn.onnx, calibrated on models/digits_calib.npz),
evaluates it on the bundled test set (540 images; ``--repeat k`` tiles it k times for a longer
run) with the ANN reference from onnxruntime, three ways, and prints for each the wall time, the
speed-up over one process, the peak RSS of this process and of the largest worker, and whether the
whole table (accuracy, agreement, |out - ANN|, firing rate and SOPs at every T, spikes per
population) equals the one-process table bit for bit (floats carried through JSON, which keeps
every bit). Each way runs in a fresh process, so its peak RSS is its own (conversion and the
onnxruntime reference included); the time is the evaluation's alone, and the Ray cluster's
start-up is timed apart. Exits 1 if a table differs.

    ./dev shell python benchmarks/bench_parallel.py [--workers 2] [-T 64] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from onnx2snn.convert import convert
from onnx2snn.evaluate import evaluate_graph
from onnx2snn.oracle import onnxruntime_outputs

MODELS = Path(__file__).resolve().parents[1] / "models"
MODES = ("one", "processes", "ray")


def _mb(n: int) -> str:
    return f"{n / 2**20:7,.0f} MB"


def run_one(mode: str, args: argparse.Namespace) -> dict[str, object]:
    """Convert, then evaluate one way (``one``, ``processes`` or ``ray``) in this fresh process."""
    calib = np.load(MODELS / "digits_calib.npz")["x"].reshape(-1, 1, 8, 8)
    test = np.load(MODELS / "digits_test.npz")
    x = np.tile(test["x"].reshape(-1, 1, 8, 8).astype(np.float32), (args.repeat, 1, 1, 1))
    y = np.tile(test["y"], args.repeat)
    graph = convert(MODELS / "digits_cnn.onnx", calib).snn
    ann = onnxruntime_outputs(MODELS / "digits_cnn.onnx", x)
    ts = [2**k for k in range(args.T.bit_length()) if 2**k <= args.T]
    kw: dict[str, object] = {}
    ray_start = None
    if mode == "processes":
        kw = {"workers": args.workers}
    elif mode == "ray":
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
        ray_start = time.perf_counter() - t
        kw = {"workers": args.workers, "parallel": "ray"}
    t = time.perf_counter()
    ev = evaluate_graph(graph, x, y, ts, ann_outputs=ann, batch_size=args.batch_size,
                        **kw)  # type: ignore[arg-type]
    dt = time.perf_counter() - t
    if mode == "ray":
        ray.shutdown()
    return {"samples": len(x), "ts": ts, "macs": graph.macs(), "seconds": dt,
            "ray_start": ray_start, "table": [asdict(r) for r in ev.rows], "layers": ev.layers,
            "peak": ev.peak_rss_bytes, "workers": ev.worker_peak_rss_bytes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("-T", type=int, default=64, help="largest T (read at 1, 2, 4, ..., T)")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per shard")
    parser.add_argument("--repeat", type=int, default=1, help="tile the test set this many times")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray run")
    parser.add_argument("--only", choices=MODES, help=argparse.SUPPRESS)  # one run, JSON out
    args = parser.parse_args()
    if args.only:
        print(json.dumps(run_one(args.only, args)))
        return 0

    runs = []
    for mode in MODES[:2] if args.no_ray else MODES:
        # each run in a fresh process, so that its peak RSS is its own
        cmd = [sys.executable, __file__, "--only", mode] + sys.argv[1:]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        runs.append((mode, json.loads(out.strip().splitlines()[-1])))
    base = runs[0][1]
    print(f"digits CNN: {base['samples']} images, T = {base['ts'][-1]} (read at {base['ts']}), "
          f"shards of {args.batch_size} samples, {base['macs']:,} MACs/image·step")
    names = {"one": "one process", "processes": f"{args.workers} worker processes",
             "ray": f"Ray, {args.workers} CPUs"}
    print(f"\n{'run':<22} {'time':>8} {'speed-up':>9} {'peak RSS here':>14} "
          f"{'largest worker':>15}  equal to one process")
    same_all = True
    for mode, r in runs:
        same = (r["table"], r["layers"]) == (base["table"], base["layers"])
        same_all &= same
        worker = max(r["workers"].values(), default=0)
        print(f"{names[mode]:<22} {r['seconds']:7.2f}s {base['seconds'] / r['seconds']:8.2f}× "
              f"{_mb(r['peak']):>14} {_mb(worker) if worker else '-':>15}  "
              f"{'yes, bit for bit' if same else 'NO'}")
    for _, r in runs:
        if r["ray_start"] is not None:
            print(f"(the local Ray cluster took {r['ray_start']:.1f} s to start, not counted above)")
    last = base["table"][-1]
    print(f"\nat T={last['t']}: accuracy {last['accuracy']:.4f}, agreement "
          f"{last['agreement']:.4f}, |out - ANN| {last['mean_abs_error']!r}, "
          f"SOPs/sample {last['sops']!r}")
    return 0 if same_all else 1


if __name__ == "__main__":
    sys.exit(main())
