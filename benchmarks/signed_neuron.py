"""A native signed neuron against the pair of ReLU populations, on the signed bundled models.

    ./dev shell python benchmarks/signed_neuron.py [--models digits_cnn_leaky,...] [--limit N]
    ./dev shell python benchmarks/signed_neuron.py --loihi     # the pair on Loihi, fixed point

The pair (what onnx2snn converts to, ``onnx2snn/convert/signed.py``) runs in the reference
simulator. The native neuron is simulated here, on the original ANN graph, not in the product:
one population per LeakyRelu/PRelu, one membrane v per neuron integrating the current z,

    v ≥ θp:   send +θp,      v ← v − θp
    v ≤ −θn:  send −α·θn,    v ← v + θn

(Spiking-YOLO's imbalanced threshold, with θp and θn the pair's calibrated λ of the positive and
negative halves, so both run on the same statistics). Both use the ideal schedule, direct input,
reset by subtraction, and the same recipe (channel-wise p99.9) with v0 = 0 (the native neuron has
one v, so the pair's v0 = θ/2 has no single counterpart; the pair with v0 = θ/2 is printed too).
Printed: accuracy at each T, neurons, spikes per image at the largest T, and synaptic operations
per image (spikes × fan-out; the native neuron's fan-out is the ReLU net's, each half of the pair
feeds both halves of the next pair).

``--loihi`` prints instead the pair's accuracy in the bit-exact Loihi 2 fixed-point reference,
for ``sdnn`` and ``lif``, each converted with its target profile's recipe and quantized; T counts
from the first output (the pipeline latency is added).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from onnx2snn.backends.numpy import simulate
from onnx2snn.backends.numpy.fixed_point import simulate_fixed
from onnx2snn.backends.numpy.simulator import fanout
from onnx2snn.convert import Recipe, convert
from onnx2snn.convert.calibrate import choose_scales, collect_stats
from onnx2snn.convert.pipeline import build_snn, prepare_ann
from onnx2snn.convert.profiles import profile_for
from onnx2snn.evaluate import accuracy
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Input, LeakyRelu
from onnx2snn.ir.spiking import IF
from onnx2snn.quantize import quantize_for_loihi

MODELS = Path(__file__).resolve().parents[1] / "models"
TS = (1, 2, 4, 8, 16, 32, 64)


def native_fanout(ann: Graph) -> dict[str, float]:
    """The simulator's fan-out of each LeakyRelu, counted as one population of its shape."""
    as_pops = ann.with_nodes([IF(name=n.name, inputs=n.inputs, shape=n.shape, threshold=np.ones(()),
                                 out_scale=np.ones(()), v0=np.zeros(()))
                              if isinstance(n, LeakyRelu) else n for n in ann.nodes])
    return fanout(as_pops)


def simulate_native(ann: Graph, lam: dict[str, tuple[np.ndarray, np.ndarray]], x: np.ndarray,
                    steps: int) -> tuple[np.ndarray, int, float, float]:
    """Predictions (T, B, classes), neurons, spikes and SOPs per image of the signed-neuron SNN."""
    v = {n.name: np.zeros((len(x), *n.shape)) for n in ann.nodes if isinstance(n, LeakyRelu)}
    fan = native_fanout(ann)
    out = ann.outputs[0]
    acc = np.zeros((len(x), *ann[out].shape))
    preds, spikes, sops = [], 0.0, 0.0
    for t in range(1, steps + 1):
        values: dict[str, np.ndarray] = {}
        for n in ann.nodes:
            if isinstance(n, Input):
                values[n.name] = x
            elif isinstance(n, LeakyRelu):
                theta_p, theta_n = lam[n.name]
                alpha = np.broadcast_to(n.alpha, n.shape)
                s = v[n.name]
                s += values[n.inputs[0]]
                pos = s >= theta_p
                neg = s <= -theta_n
                s -= theta_p * pos
                s += theta_n * neg
                values[n.name] = theta_p * pos - alpha * theta_n * neg
                count = float(pos.sum() + neg.sum())
                spikes += count
                sops += count * fan[n.name]
            else:
                values[n.name] = n.forward(*(values[i] for i in n.inputs))
        acc += values[out]
        preds.append(acc / t)
    neurons = sum(int(np.prod(n.shape)) for n in ann.nodes if isinstance(n, LeakyRelu))
    return np.stack(preds), neurons, spikes / len(x), sops / len(x)


def loihi_rows(name: str, calib: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """Print the fixed-point accuracy of ``name`` at each T for the sdnn and lif neurons."""
    for mode in ("sdnn", "lif"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snn = convert(MODELS / f"{name}.onnx", calib, profile_for("loihi", mode).recipe).snn
        q = quantize_for_loihi(snn, mode, calib_x=calib)
        lat = q.graph.meta["loihi"]["latency_steps"]
        (p,) = simulate_fixed(q.graph, x, max(TS) + lat).predictions.values()
        accs = " | ".join(f"{100 * accuracy(p[t + lat - 1], y):.2f}" for t in TS)
        print(f"| {name} | Loihi {mode} (fixed point, latency {lat}) | {accs} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits_cnn_leaky,digits_resnet_prelu")
    ap.add_argument("--limit", type=int, default=None, help="first N test images")
    ap.add_argument("--loihi", action="store_true", help="the pair in Loihi fixed point instead")
    args = ap.parse_args()
    calib = np.load(MODELS / "digits_calib.npz")["x"]
    test = np.load(MODELS / "digits_test.npz")
    x, y = test["x"][:args.limit], test["y"][:args.limit]
    if args.loihi:
        print("| model | target | " + " | ".join(f"T={t}" for t in TS) + " |")
        print("| --- | --- |" + " ---: |" * len(TS))
        for name in args.models.split(","):
            loihi_rows(name, calib, x, y)
        return
    print("| model | neuron | " + " | ".join(f"T={t}" for t in TS)
          + " | neurons | spikes/image | SOPs/image |")
    print("| --- | --- |" + " ---: |" * (len(TS) + 3))
    for name in args.models.split(","):
        ann = onnx_to_ann(MODELS / f"{name}.onnx")
        rows = []
        for v0 in ("zero", "half"):
            recipe = Recipe(norm="channel-percentile", v0=v0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pair = prepare_ann(ann, calib, recipe)
                stats = collect_stats(pair, calib)
                snn = build_snn(pair, stats, recipe, calib).snn
            res = simulate(snn, x, max(TS))
            (pred,) = res.predictions.values()
            rows.append((f"pair, v0={'0' if v0 == 'zero' else 'θ/2'}", pred,
                         sum(res.neurons.values()), float(sum(s.sum() for s in
                                                              res.spikes.values())) / len(x),
                         float(res.sops.sum()) / len(x)))
        scales = choose_scales(pair, stats, Recipe(norm="channel-percentile"))
        lam = {}
        for n in ann.nodes:
            if isinstance(n, LeakyRelu):
                shape = (-1,) + (1,) * (len(n.shape) - 1)
                lp = np.asarray(scales[f"{n.name}/pos"].lam).reshape(shape)
                ln = np.asarray(scales[f"{n.name}/neg"].lam).reshape(shape) \
                    if f"{n.name}/neg" in scales else np.full_like(lp, np.inf)
                lam[n.name] = (lp, ln)
        pred, neurons, spikes, sops = simulate_native(ann, lam, x, max(TS))
        rows.insert(1, ("native signed, v0=0", pred, neurons, spikes, sops))
        for label, p, neurons, spikes, sops in rows:
            accs = " | ".join(f"{100 * accuracy(p[t - 1], y):.2f}" for t in TS)
            print(f"| {name} | {label} | {accs} | {neurons:,} | {spikes:,.0f} | {sops:,.0f} |")


if __name__ == "__main__":
    main()
