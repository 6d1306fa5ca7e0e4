"""The fixed-point reference (``simulate_fixed``): NumPy float64 synapses against exact float32.

For each model and Loihi neuron mode, the quantized graph runs in ``simulate_fixed`` twice per
repeat, interleaved in one process: with ``kernels="numpy"`` (every ``LoihiDense`` / ``LoihiConv``
in NumPy float64, as before) and with the default kernels (their integer products in float32
through onnxruntime where ``kernels.exact_in_float32`` proves it exact,
``kernels.fixed_point_kernel``). Printed: the median wall time of each over the repeats, the
ratio, how many synapse calls took the float32 path, and whether both runs gave the same bits
(every population and readout current recorded, and the predictions; ``np.array_equal``).
Exit status 1 if any run differs.

    nice .venv/bin/python benchmarks/bench_fixed_point.py                      # a few minutes
    nice .venv/bin/python benchmarks/bench_fixed_point.py --models digits_cnn --modes lif -n 100

Models: ``models/<name>.onnx`` converted with the default recipe (``maxpool="avg"`` for the
MNIST nets, whose max pools Loihi cannot express), calibrated on the model's calibration set,
quantized with ``quantize_for_loihi``; the first ``-n`` test images, ``-T`` steps. Of the MNIST
nets only ``mnist_vgg`` has a Loihi form (``quantize_for_loihi`` refuses ``mnist_resnet``,
``mnist_mobilenet`` and ``mnist_inception``: the refusal is printed in their row).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

from onnx2snn.backends.numpy import kernels as K
from onnx2snn.backends.numpy.fixed_point import simulate_fixed
from onnx2snn.convert import Recipe, convert
from onnx2snn.errors import Onnx2SnnError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.loihi import LoihiNeuron
from onnx2snn.quantize import quantize_for_loihi

MODELS = Path(__file__).resolve().parents[1] / "models"
DEFAULT_MODELS = "digits_mlp,digits_cnn,digits_dwsep,digits_resnet_avg,mnist_vgg"


def quantized(model: str, mode: str) -> tuple[Graph, np.ndarray]:
    """The quantized graph of ``models/<model>.onnx`` and the test images (shaped for it)."""
    family = model.split("_")[0]
    cal = np.load(MODELS / f"{family}_calib.npz")["x"]
    x = np.load(MODELS / f"{family}_test.npz")["x"]
    recipe = Recipe(maxpool="avg") if family == "mnist" else Recipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(MODELS / f"{model}.onnx", cal, recipe).snn  # type: ignore[arg-type]
        q = quantize_for_loihi(snn, mode, calib_x=cal[:256]).graph
    return q, x.reshape((len(x),) + q[q.inputs[0]].shape)


def float32_share(q: Graph, x: np.ndarray, steps: int) -> tuple[int, int]:
    """(synapse calls on the float32 path, all synapse calls) in one default run."""
    verdicts: list[bool] = []
    exact = K.exact_in_float32

    def counted(batch: np.ndarray, l1: int) -> bool:
        verdicts.append(exact(batch, l1))
        return verdicts[-1]

    K.exact_in_float32 = counted  # type: ignore[assignment]  # the kernels look it up per call
    try:
        simulate_fixed(q, x, steps)
    finally:
        K.exact_in_float32 = exact  # type: ignore[assignment]
    return sum(verdicts), len(verdicts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--modes", default="lif,if-subtract,sdnn")
    ap.add_argument("-n", "--images", type=int, default=200)
    ap.add_argument("-T", "--timesteps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    steps = args.timesteps
    print(f"simulate_fixed, {args.images} images, T = {steps}, median of {args.repeats} "
          "interleaved runs\n")
    print("| model | neuron | NumPy float64 (s) | float32 where exact (s) | speed-up | "
          "float32 calls | same bits |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |", flush=True)
    failed = False
    for model in args.models.split(","):
        for mode in args.modes.split(","):
            try:
                q, x_all = quantized(model, mode)
            except Onnx2SnnError as e:
                print(f"| {model} | {mode} | refused: {str(e).splitlines()[0]} | | | | |")
                continue
            x = x_all[:args.images]
            keep = [n.name for n in q.nodes if isinstance(n, LoihiNeuron)] + [
                q[o].inputs[0] for o in q.outputs]
            times: dict[str, list[float]] = {"numpy": [], "auto": []}
            runs = {}
            for _ in range(args.repeats):
                for kernels in ("numpy", "auto"):
                    t0 = time.perf_counter()
                    runs[kernels] = simulate_fixed(q, x, steps, record=keep, kernels=kernels)
                    times[kernels].append(time.perf_counter() - t0)
            a, b = runs["numpy"], runs["auto"]
            same = all(np.array_equal(a.recorded[k], b.recorded[k]) for k in keep) and all(
                np.array_equal(a.predictions[k], b.predictions[k]) for k in a.predictions)
            failed |= not same
            fast, calls = float32_share(q, x, steps)
            slow_s, fast_s = statistics.median(times["numpy"]), statistics.median(times["auto"])
            print(f"| {model} | {mode} | {slow_s:.2f} | {fast_s:.2f} | {slow_s / fast_s:.1f}× | "
                  f"{fast}/{calls} | {'yes' if same else 'NO'} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
