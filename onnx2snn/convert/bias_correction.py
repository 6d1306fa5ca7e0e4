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
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnx2snn.ann_executor import run_ann
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.spiking import IF

MAX_SAMPLES = 128


def _channel_mean(a: np.ndarray, lead: int) -> np.ndarray:
    """Mean over the first ``lead`` axes and every axis after the channel axis: shape (C,)."""
    c = a.shape[lead]
    return np.moveaxis(a, lead, 0).reshape(c, -1).mean(axis=1)


def _layerwise(snn: Graph, ann: Graph, x: np.ndarray, steps: int, per_neuron: bool,
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
        partial = snn.with_nodes(nodes, [pop.name])
        rec = simulate(partial, x, steps, record=[pop.name]).recorded[pop.name]
        target = np.minimum(acts[pop.name], np.broadcast_to(pop.out_scale, pop.shape))
        if per_neuron:
            delta = target.mean(axis=0) - rec.mean(axis=(0, 1))
            corrected = pop.replace(v0=np.broadcast_to(pop.v0, pop.shape) + steps * delta)
        else:
            delta = (_channel_mean(target, 1) - _channel_mean(rec, 2)).reshape(
                (-1,) + (1,) * (len(pop.shape) - 1))
            corrected = pop.replace(bias=delta if pop.bias is None else pop.bias + delta)
        corrections[pop.name] = float(np.abs(delta).mean())
        snn = snn.with_nodes([corrected if n.name == pop.name else n for n in snn.nodes])
        if progress is not None:
            progress(1)
    key = "v0_correction_mean_abs" if per_neuron else "bias_correction_mean_abs"
    meta_cal = dict(snn.meta.get("calibration", {}))
    for name, d in corrections.items():
        meta_cal[name] = dict(meta_cal.get(name, {}), **{key: d})
    return snn.with_nodes(snn.nodes, calibration=meta_cal)


def correct_biases(snn: Graph, ann: Graph, x: np.ndarray, steps: int,
                   progress: Callable[[int], None] | None = None) -> Graph:
    """Return ``snn`` with every IF population's bias corrected per channel on inputs ``x``."""
    return _layerwise(snn, ann, x, steps, per_neuron=False, progress=progress)


def calibrate_v0(snn: Graph, ann: Graph, x: np.ndarray, steps: int,
                 progress: Callable[[int], None] | None = None) -> Graph:
    """Return ``snn`` with every neuron's initial potential calibrated on inputs ``x``."""
    return _layerwise(snn, ann, x, steps, per_neuron=True, progress=progress)
