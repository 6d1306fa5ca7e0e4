"""Post-training calibration of biases and initial potentials (Li et al. 2021).

After threshold balancing, the mean output of a population over the first t steps differs from
the ANN's activation by two parts: a transient, the residue the neurons still hold and the late
start of the layers before, which falls as 1/t (rate-coding identity, DESIGN.md §3), and a
steady error that does not (input correlations that a rate cannot express, clipping at λ).
Layer by layer, in graph order, ``correct_biases`` simulates the SNN on calibration data for
T_c = ``correction_steps`` steps and adds the steady part, per channel, to the population's bias
current: the ANN's mean activation (clipped at λ, the most a population can send per step) minus
the SNN's mean output over the later half of the steps,

    bias_l[c] += mean_ANN_l[c] − mean_{T_c/2 < t ≤ T_c} SNN_l[c, t]

A transient is a charge, not a current: over the later half of the steps a charge the layer
missed at the start no longer shows. Fitting the mean over all T_c steps instead (as this pass
did until 2026-12) turns the transient at T_c into a constant current, which over-corrects at
every t > T_c (digits_dwsep with ``--v0 calibrated --bias-correction``: 96.3 % at T = 32, 94.6 %
at T = 128; with the later half, 96.9 and 96.7; docs/conversion.md §4). The transient is what
``calibrate_v0`` corrects, as the charge it is. Earlier layers are corrected first, so each
layer is corrected for the errors it really receives.

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

Cost, linear in depth: correcting a population changes nothing upstream of it, so each
population's *region* (the nodes from the nearest sources to it: earlier populations, max-pool
gates, the network input) is simulated alone, fed what those sources sent once corrected (a
population's spikes packed, 1 bit per neuron and step; a gate's output as values; replayed
through ``RecordedInput`` and kept only while a later region reads them). Each population costs
its region once per round plus once to record what it sends, instead of the whole network up
to it; the replayed values have the bits of the sources' own outputs, so the corrections are the
same bits as simulating every prefix (tests/test_convert.py checks this against the prefix
simulation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from onnx2snn.ann_executor import run_ann
from onnx2snn.backends.numpy.simulator import INPUT_RUNNERS, simulate
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Input, Node, array_field
from onnx2snn.ir.spiking import IF, MaxPoolGate

MAX_SAMPLES = 128
GAIN_ROUNDS = 3  # multiplicative updates per layer


def _channel_mean(a: np.ndarray, lead: int) -> np.ndarray:
    """Mean over the first ``lead`` axes and every axis after the channel axis: shape (C,)."""
    c = a.shape[lead]
    return np.moveaxis(a, lead, 0).reshape(c, -1).mean(axis=1)


@dataclass(frozen=True, eq=False, kw_only=True)
class RecordedInput(Input):
    """A source that replays what a node sent in an earlier run: the simulated ``x`` holds sample
    indices i, and at step t the node sends ``spikes[i, t]`` (bits, packed per sample and step)
    times ``out_scale`` (a population's output: its spikes times their worth), or ``values[i, t]``
    (a max-pool gate's output; a time axis of length 1 is sent at every step: the network's
    input). Used only inside the corrections below; never saved."""

    kind: ClassVar[str] = "recorded_input"
    out_scale: np.ndarray | None = array_field(optional=True)
    spikes: np.ndarray | None = array_field(optional=True)  # (N, T, ceil(size / 8)) uint8
    values: np.ndarray | None = array_field(optional=True)  # (N, T or 1, *shape)


def _replay(node: RecordedInput, x: np.ndarray, steps: int, dtype: type,
            start: int = 0) -> np.ndarray:
    """Steps start .. start+steps-1 of ``node`` for the samples whose indices are ``x``:
    (steps, B, *shape), with the bits of what the node sent (a population: s · out_scale)."""
    idx = x.astype(np.int64)
    if node.values is not None:
        v = node.values[idx] if node.values.shape[1] == 1 else node.values[idx, start:start + steps]
        return np.broadcast_to(v.astype(dtype).swapaxes(0, 1), (steps, len(idx)) + node.shape)
    assert node.spikes is not None and node.out_scale is not None  # one of the two is set
    size = int(np.prod(node.shape))
    bits = np.unpackbits(node.spikes[idx, start:start + steps], axis=-1, count=size)
    out: np.ndarray = bits.transpose(1, 0, 2).reshape((steps, len(idx)) + node.shape).astype(dtype)
    out *= node.out_scale.astype(dtype)
    return out


INPUT_RUNNERS[RecordedInput] = _replay
# where a region starts: what these send is recorded once and replayed (a max-pool gate's output
# depends on its input alone, so it is recorded once, not re-run for every round and region)
SOURCES = (IF, Input, MaxPoolGate)


def _region(snn: Graph, node: Node) -> list[Node]:
    """The nodes that compute ``node`` from the nearest sources (populations, max-pool gates,
    the network's input): those sources first, then the nodes between in graph order, ``node``
    last. Correcting a population changes nothing before it, so its region, fed what those
    sources sent, is all that must be simulated again."""
    sources: set[str] = set()
    inside: set[str] = set()
    todo = list(node.inputs)
    while todo:
        name = todo.pop()
        if name in inside or name in sources:
            continue
        if isinstance(snn[name], SOURCES):
            sources.add(name)
        else:
            inside.add(name)
            todo.extend(snn[name].inputs)
    return ([n for n in snn.nodes if n.name in sources]
            + [n for n in snn.nodes if n.name in inside] + [node])


def _simulate_region(region: list[Node], x: np.ndarray, steps: int,
                     sent: dict[str, RecordedInput]) -> np.ndarray:
    """The output (steps, B, *shape) of the region's last node when its sources send what they
    sent in the earlier runs (``sent``) and the network's input is ``x``."""
    last = region[-1]
    sources = [n for n in region[:-1] if isinstance(n, SOURCES)]
    if all(isinstance(n, Input) for n in sources):  # the input alone: the simulator's own
        graph = Graph(tuple(region), (last.name,))
        return simulate(graph, x, steps, record=[last.name]).recorded[last.name]
    replayed = [RecordedInput(name=n.name, inputs=(), shape=n.shape, values=x[:, None])
                if isinstance(n, Input) else sent[n.name] for n in sources]
    graph = Graph(tuple(replayed + region[len(sources):]), (last.name,))
    index = np.arange(len(x), dtype=np.float64)
    return simulate(graph, index, steps, record=[last.name]).recorded[last.name]


def _recorded(node: Node, out: np.ndarray) -> RecordedInput:
    """What ``node`` sent (its output (T, B, *shape)) as a source to replay: a population's
    spikes packed with its ``out_scale``, a max-pool gate's values as they are."""
    t, b = out.shape[:2]
    if isinstance(node, IF):
        packed = np.packbits(out.reshape(t, b, -1).transpose(1, 0, 2) != 0, axis=-1)
        packed.flags.writeable = False  # kept as is by the node (no copy)
        return RecordedInput(name=node.name, inputs=(), shape=node.shape,
                             out_scale=node.out_scale, spikes=packed)
    values = np.ascontiguousarray(out.swapaxes(0, 1))
    values.flags.writeable = False
    return RecordedInput(name=node.name, inputs=(), shape=node.shape, values=values)


def _layerwise(snn: Graph, ann: Graph, x: np.ndarray, steps: int, mode: str,
               progress: Callable[[int], None] | None) -> Graph:
    x = x[:MAX_SAMPLES]
    pops = [n for n in snn.nodes if isinstance(n, IF)]
    acts = run_ann(ann, x, keep=[p.name for p in pops])
    regions = {n.name: _region(snn, n) for n in snn.nodes if isinstance(n, (IF, MaxPoolGate))}
    # the last population (index) whose correction reads each source, directly or through gates
    last_use: dict[str, int] = {}
    for i, pop in enumerate(pops):
        todo = [pop.name]
        while todo:
            for n in regions[todo.pop()][:-1]:
                if isinstance(n, (IF, MaxPoolGate)):
                    last_use[n.name] = i
                    if isinstance(n, MaxPoolGate):
                        todo.append(n.name)
    sent: dict[str, RecordedInput] = {}  # what corrected sources sent, while a region reads it
    corrections = {}
    for i, pop in enumerate(pops):
        for gate in snn.nodes:  # gates this region reads (and gates before them) recorded once
            if (isinstance(gate, MaxPoolGate) and gate.name not in sent
                    and last_use.get(gate.name, -1) >= i
                    and all(n.name in sent or isinstance(n, Input) for n in regions[gate.name]
                            if isinstance(n, SOURCES) and n is not gate)):
                sent[gate.name] = _recorded(gate, _simulate_region(regions[gate.name], x, steps,
                                                                   sent))
        region = regions[pop.name]
        target = np.minimum(acts[pop.name], np.broadcast_to(pop.out_scale, pop.shape))
        rounds = GAIN_ROUNDS if mode == "gain" else 1
        corrected = pop
        for _ in range(rounds):
            rec = _simulate_region(region[:-1] + [corrected], x, steps, sent)
            corrected, delta = _correct(corrected, target, rec, steps, mode)
        if mode == "gain":  # report the total gain, not the last round's
            delta = float(np.mean(np.asarray(corrected.out_scale) / np.asarray(pop.out_scale)))
        corrections[pop.name] = delta
        snn = snn.with_nodes([corrected if n.name == pop.name else n for n in snn.nodes])
        if pop.name in last_use:  # later regions read it: what the corrected population sends
            sent[pop.name] = _recorded(corrected, _simulate_region(region[:-1] + [corrected], x,
                                                                   steps, sent))
        for name in [k for k in sent if last_use[k] <= i]:
            del sent[name]
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
    if mode == "bias":  # the steady state: the mean over the later half of the steps
        snn_mean = _channel_mean(rec[steps // 2:], 2)
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
