"""Post-training calibration of biases and initial potentials (Li et al. 2021).

After threshold balancing, the mean output of a population over T steps falls short of the ANN's
activation by the residue the neurons still hold (rate-coding identity, DESIGN.md §3). Layer by
layer, in graph order, this pass simulates the SNN on calibration data for ``correction_steps``
steps, compares each channel's mean SNN output with the ANN's mean activation (clipped at λ, the
most a population can send per step), and adds the difference to the population's bias current:

    bias_l[c] += mean_ANN_l[c] − mean_SNN_l[c]

Earlier layers are corrected first, so each layer is corrected for the errors it really receives.

``calibrate_v0`` (the "advanced" variant) corrects each neuron's initial potential instead: a
charge Δv0 spread over T steps acts like a bias of Δv0/T, so per neuron

    v0_l[i] += T · (mean_ANN_l[i] − mean_SNN_l[i])      (means over the calibration samples)

``calibrate_gains`` is the correction for reset-to-zero neurons, whose rate falls short of the
input in proportion, not by an offset: a neuron reset to zero throws away the overshoot v − θ of
every spike, so with a constant input I per step it fires at 1/⌈θ/I⌉ instead of I/θ (0.5 instead
of 0.6 at I = 0.6θ), and the loss compounds with depth. Per channel, keeping the threshold (so the
distortion stays where it is) and raising what a spike is worth until the mean output meets the
ANN's (``GAIN_ROUNDS`` multiplicative updates, since the output is not exactly ∝ the worth once
the next layers see it):

    out_scale_l[c] ← out_scale_l[c] / clip(mean_SNN_l[c] / mean_ANN_l[c], 1/4, 1)

Lowering the threshold instead (the same mean) was measured worse: it moves every neuron to a
larger I/θ, where 1/⌈θ/I⌉ bends most (docs/conversion.md, reset to zero). For reset by
subtraction the ratio is about 1 and the pass changes little.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnx2snn.ann_executor import run_ann
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.spiking import IF

MAX_SAMPLES = 128
GAIN_ROUNDS = 3  # multiplicative updates per layer


def _channel_mean(a: np.ndarray, lead: int) -> np.ndarray:
    """Mean over the first ``lead`` axes and every axis after the channel axis: shape (C,)."""
    c = a.shape[lead]
    return np.moveaxis(a, lead, 0).reshape(c, -1).mean(axis=1)


def _layerwise(snn: Graph, ann: Graph, x: np.ndarray, steps: int, mode: str,
               progress: Callable[[int], None] | None) -> Graph:
    from onnx2snn.backends.numpy.simulator import simulate  # the reference simulator

    x = x[:MAX_SAMPLES]
    pops = [n for n in snn.nodes if isinstance(n, IF)]
    acts = run_ann(ann, x, keep=[p.name for p in pops])
    corrections = {}
    for pop in pops:
        nodes = []
        for n in snn.nodes:
            nodes.append(n)
            if n.name == pop.name:
                break
        target = np.minimum(acts[pop.name], np.broadcast_to(pop.out_scale, pop.shape))
        rounds = GAIN_ROUNDS if mode == "gain" else 1
        corrected = pop
        for _ in range(rounds):
            partial = snn.with_nodes(nodes[:-1] + [corrected], [pop.name])
            rec = simulate(partial, x, steps, record=[pop.name]).recorded[pop.name]
            corrected, delta = _correct(corrected, target, rec, steps, mode)
        if mode == "gain":  # report the total gain, not the last round's
            delta = float(np.mean(np.asarray(corrected.out_scale) / np.asarray(pop.out_scale)))
        corrections[pop.name] = delta
        snn = snn.with_nodes([corrected if n.name == pop.name else n for n in snn.nodes])
        if progress is not None:
            progress(1)
    key = {"bias": "bias_correction_mean_abs", "v0": "v0_correction_mean_abs",
           "gain": "gain_mean"}[mode]
    meta_cal = dict(snn.meta.get("calibration", {}))
    for name, d in corrections.items():
        meta_cal[name] = dict(meta_cal.get(name, {}), **{key: d})
    return snn.with_nodes(snn.nodes, calibration=meta_cal)


def _correct(pop: IF, target: np.ndarray, rec: np.ndarray, steps: int,
             mode: str) -> tuple[IF, float]:
    """One correction of ``pop`` from ANN activations ``target`` (B, *shape) and its SNN output
    ``rec`` (T, B, *shape); returns the new population and the size of the change."""
    def changed(**fields: np.ndarray) -> IF:
        new = pop.replace(**fields)
        assert isinstance(new, IF)  # replace keeps the node's class
        return new

    if mode == "v0":
        delta = target.mean(axis=0) - rec.mean(axis=(0, 1))
        return changed(v0=np.broadcast_to(pop.v0, pop.shape) + steps * delta), float(
            np.abs(delta).mean())
    shape = (-1,) + (1,) * (len(pop.shape) - 1)
    ann_mean, snn_mean = _channel_mean(target, 1), _channel_mean(rec, 2)
    if mode == "bias":
        delta = (ann_mean - snn_mean).reshape(shape)
        return changed(bias=delta if pop.bias is None else pop.bias + delta), float(
            np.abs(delta).mean())
    # gain: channels the ANN hardly uses keep theirs (the ratio would be noise)
    live = ann_mean > 1e-3 * max(float(ann_mean.max()), 1e-12)
    ratio = np.where(live, np.clip(snn_mean / np.where(live, ann_mean, 1.0), 0.25, 1.0), 1.0)
    gain = np.asarray(pop.out_scale) / ratio.reshape(shape)
    return changed(out_scale=gain), float((1.0 / ratio).mean())


def correct_biases(snn: Graph, ann: Graph, x: np.ndarray, steps: int,
                   progress: Callable[[int], None] | None = None) -> Graph:
    """Return ``snn`` with every IF population's bias corrected per channel on inputs ``x``."""
    return _layerwise(snn, ann, x, steps, "bias", progress=progress)


def calibrate_v0(snn: Graph, ann: Graph, x: np.ndarray, steps: int,
                 progress: Callable[[int], None] | None = None) -> Graph:
    """Return ``snn`` with every neuron's initial potential calibrated on inputs ``x``."""
    return _layerwise(snn, ann, x, steps, "v0", progress=progress)


def calibrate_gains(snn: Graph, ann: Graph, x: np.ndarray, steps: int,
                    progress: Callable[[int], None] | None = None) -> Graph:
    """Return ``snn`` with each channel's spike worth raised until its mean output meets the ANN's."""
    return _layerwise(snn, ann, x, steps, "gain", progress=progress)
