"""The reference simulator: the executable form of the time-step contract (DESIGN.md §3).

The SNN graph is feed-forward, so the simulator runs it *layer by layer over all time steps at
once*: every node's output is an array (T, B, *shape). Synapse nodes (Dense, Conv, pools, Affine,
views) are stateless and run as one batched call on (T·B, *shape) — one matrix product for all
steps. Only ``IF`` populations loop over t, elementwise over (B, *shape):

    v ← v + I[t] (+ bias);  s = v ≥ θ  (loihi: v > θ);  v ← v − θ·s  or  v ← 0 where s;
    out[t] = out_scale · s

Schedules: ``ideal`` — a population answers in the step its input arrives; ``loihi`` — every
source (the input encoder and each population) reaches its synapses one step later (Lava's Dense/
Conv send the previous step's sum; biases, which live in the neuron on Loihi, are not delayed).
Encoders: ``direct`` (the analog input every step), ``poisson`` (Bernoulli spikes with p = x,
seeded). A time-constant input (direct encoding) passes through the first synapses once, not T
times. The readout accumulates its input; the prediction at step t is Σ_{τ≤t} I[τ] / t, so one
run to T yields predictions for every t ≤ T.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from onnx2snn import numerics
from onnx2snn.errors import BackendError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import (
    AvgPool,
    ChannelPermute,
    Concat,
    Conv,
    Dense,
    Input,
    Node,
    Pad,
    Reshape,
    Transpose,
)
from onnx2snn.ir.spiking import IF, MaxPoolGate, Readout

SCHEDULES = ("ideal", "loihi")
# stateless nodes that pass spikes on as spikes
VIEWS = (Reshape, Concat, ChannelPermute, Pad, Transpose)
ENCODERS = ("direct", "poisson")


@dataclass
class SimResult:
    """What one simulation of ``timesteps`` steps yields, per step t = 1..T.

    * ``predictions``: {output: (T, B, *shape)} readout prediction at every step;
    * ``spikes``: {population: (T,)} spikes per step summed over the batch and neurons;
    * ``neurons``: {population: number of neurons};
    * ``sops``: (T,) synaptic operations per step summed over the batch (spikes × fan-out);
    * ``recorded``: {node: (T, B, *shape)} outputs of nodes asked for with ``record``, as their
      consumers receive them: in the "loihi" schedule the spikes a population (or the input
      encoder) sends at step t are recorded at t + 1, while ``spikes`` counts them at t.
    """

    timesteps: int
    batch: int
    predictions: dict[str, np.ndarray]
    spikes: dict[str, np.ndarray]
    neurons: dict[str, int]
    sops: np.ndarray
    recorded: dict[str, np.ndarray] = field(default_factory=dict)

    def firing_rate(self, t: int | None = None) -> float:
        """Mean spikes per neuron per step over steps 1..t (all neurons of all populations)."""
        t = self.timesteps if t is None else t
        total = sum(float(s[:t].sum()) for s in self.spikes.values())
        n = sum(self.neurons.values()) * self.batch * t
        return total / n if n else 0.0

    def sops_per_sample(self, t: int | None = None) -> float:
        """Synaptic operations per sample over steps 1..t."""
        t = self.timesteps if t is None else t
        return float(self.sops[:t].sum()) / max(self.batch, 1)


@dataclass
class _Val:
    """A node's output over time: ``data`` is (T, B, ...) or, if ``static``, (1, B, ...)."""

    data: np.ndarray
    static: bool


def encode(x: np.ndarray, timesteps: int, encoder: str, seed: int, dtype: type,
           first: int = 0) -> _Val:
    """The input layer: ``direct`` (x every step) or ``poisson`` (spikes with p = clip(x, 0, 1)).

    Poisson spikes of sample i (``first`` is the index of x[0] in the whole data set) come from
    their own generator seeded with (seed, i), so they do not depend on how the data is batched.
    """
    x = x.astype(dtype, copy=False)
    if encoder == "direct":
        return _Val(x[None], True)
    if encoder == "poisson":
        p = np.clip(x, 0.0, 1.0)
        u = np.empty((timesteps,) + x.shape)
        for i in range(len(x)):
            u[:, i] = np.random.default_rng([seed, first + i]).random((timesteps,) + x.shape[1:])
        return _Val((u < p).astype(dtype), False)
    raise BackendError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")


def _delay(v: _Val, timesteps: int) -> _Val:
    """Shift by one step: out[0] = 0, out[t] = in[t-1] (the loihi schedule's synapse latency)."""
    data = np.broadcast_to(v.data, (timesteps,) + v.data.shape[1:])
    out = np.zeros_like(data)
    out[1:] = data[:-1]
    return _Val(out, False)


def _run_stateless(node: Node, inputs: list[_Val], timesteps: int) -> _Val:
    static = all(v.static for v in inputs)
    steps = 1 if static else timesteps
    arrays = [np.broadcast_to(v.data, (steps,) + v.data.shape[1:]) for v in inputs]
    t, b = arrays[0].shape[:2]
    flat = [a.reshape((t * b,) + a.shape[2:]) for a in arrays]
    y = node.forward(*flat)
    return _Val(y.reshape((t, b) + y.shape[1:]).astype(arrays[0].dtype, copy=False), static)


def _run_if(node: IF, current: _Val, timesteps: int, strict: bool,
            dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Step an IF population through all steps: (output values (T, B, ...), spikes per step (T,))."""
    b = current.data.shape[1]
    shape = (b,) + node.shape
    theta: np.ndarray = node.threshold.astype(dtype)
    v: np.ndarray = np.broadcast_to(node.v0.astype(dtype), shape).copy()
    bias: np.ndarray | None = None if node.bias is None else node.bias.astype(dtype)
    out: np.ndarray = np.empty((timesteps,) + shape, dtype=dtype)
    spikes = np.empty(shape, dtype=bool)
    for t in range(timesteps):
        v += current.data[0 if current.static else t]
        if bias is not None:
            v += bias
        if strict:
            np.greater(v, theta, out=spikes)
        else:
            np.greater_equal(v, theta, out=spikes)
        if node.reset == "subtract":
            v -= theta * spikes
        else:
            v[spikes] = 0.0
        out[t] = spikes
    counts = out.reshape(timesteps, -1).sum(axis=1)
    out *= node.out_scale.astype(dtype)
    return out, counts


# Population node type -> function stepping it through time. Other modules (fixed-point Loihi
# neurons, NIR neurons) register their own kinds here; each returns (outputs, spikes per step).
PopulationRunner = Callable[[Any, _Val, int, bool, type], tuple[np.ndarray, np.ndarray]]
POPULATION_RUNNERS: dict[type, PopulationRunner] = {IF: _run_if}
# Input and readout subclasses with their own encoding / read-back (fixed-point Loihi): an input
# runner maps (node, x, timesteps, dtype) to the encoder's output (T, B, ...) before the schedule's
# delay; a readout runner maps (node, currents (T, B, ...)) to the predictions at every step.
InputRunner = Callable[[Any, np.ndarray, int, type], np.ndarray]
ReadoutRunner = Callable[[Any, np.ndarray], np.ndarray]
INPUT_RUNNERS: dict[type, InputRunner] = {}
READOUT_RUNNERS: dict[type, ReadoutRunner] = {}


def _maxpool_gate(node: MaxPoolGate, x: _Val, timesteps: int) -> _Val:
    """Pass, per window and step, the input whose accumulated output so far is largest."""
    data = np.broadcast_to(x.data, (timesteps,) + x.data.shape[1:])
    t, b = data.shape[:2]
    flat = data.reshape((t * b,) + data.shape[2:])
    acc = np.cumsum(data, axis=0).reshape(flat.shape)
    kernel = (node.kernel[0], node.kernel[1])
    strides = (node.strides[0], node.strides[1])
    dil = (node.dilations[0], node.dilations[1])
    pads = (node.pads[0], node.pads[1], node.pads[2], node.pads[3])
    out_hw, full = numerics.pool_geometry((flat.shape[2], flat.shape[3]), kernel, strides, pads,
                                          dil, node.ceil_mode)
    acc_w = numerics._windows(numerics.pad2d(acc, full, -np.inf), kernel, strides, dil, out_hw)
    x_w = numerics._windows(numerics.pad2d(flat, full, 0.0), kernel, strides, dil, out_hw)
    k = kernel[0] * kernel[1]
    winner = acc_w.reshape(acc_w.shape[:4] + (k,)).argmax(axis=-1)[..., None]
    y = np.take_along_axis(x_w.reshape(x_w.shape[:4] + (k,)), winner, axis=-1)[..., 0]
    return _Val(y.reshape((t, b) + y.shape[1:]), False)


def fanout(graph: Graph) -> dict[str, float]:
    """Mean number of synaptic operations one unit of output of each node triggers downstream.

    A Dense/Conv consumer contributes its MACs per input element. An AvgPool consumer does too,
    and since a pooled value is no spike, each window the element falls in also passes on the
    fan-out of the pool's output (a spike into pool -> conv drives the conv, as on Loihi, where
    the pool is folded into the conv). A max-pool gate contributes nothing here: only the inputs
    it lets through trigger anything, so the simulator counts the gate's own output events.
    Views, Add, Concat, Affine and Pad pass their consumers' fan-out through; populations and
    readouts end a path.
    """
    consumers = graph.consumers()
    memo: dict[str, float] = {}
    for n in reversed(graph.nodes):
        total = 0.0
        for c_name in consumers[n.name]:
            c = graph[c_name]
            if isinstance(c, (Dense, Conv, AvgPool)) or getattr(c, "is_synapse", False):
                per_input = c.macs(graph.input_shapes(c)) / max(int(np.prod(n.shape)), 1)
                total += per_input * (1.0 + memo[c_name]) if isinstance(c, AvgPool) else per_input
            elif (type(c) in POPULATION_RUNNERS or isinstance(c, (Readout, MaxPoolGate))):
                continue
            else:  # views, Add, Concat, Affine, Pad: pass through
                total += memo[c_name]
        memo[n.name] = total
    return memo


def simulate(graph: Graph, x: np.ndarray, timesteps: int, *, schedule: str = "ideal",
             encoder: str = "direct", dtype: type = np.float32, seed: int = 0,
             record: Iterable[str] = (), batch_size: int | None = None,
             progress: Callable[[int], None] | None = None, first_sample: int = 0) -> SimResult:
    """Simulate ``graph`` on inputs ``x`` (N, *input shape) for ``timesteps`` steps.

    ``first_sample`` is the index of x[0] in the whole data set: Poisson spikes are seeded per
    sample index, so a shard of the data (``onnx2snn.parallel``) gets the spikes a whole run would.
    """
    if schedule not in SCHEDULES:
        raise BackendError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if timesteps < 1:
        raise BackendError("timesteps must be at least 1")
    n = len(x)
    step = batch_size or n
    results = [_simulate_batch(graph, x[s:s + step], timesteps, schedule, encoder, dtype,
                               seed, first_sample + s, set(record), progress)
               for s in range(0, n, step)]
    first = results[0]
    if len(results) == 1:
        return first
    return SimResult(
        timesteps, n,
        {k: np.concatenate([r.predictions[k] for r in results], axis=1) for k in first.predictions},
        # several batches, so each sum is an array (never sum()'s start value 0)
        {k: cast(np.ndarray, sum(r.spikes[k] for r in results)) for k in first.spikes},
        first.neurons,
        cast(np.ndarray, sum(r.sops for r in results)),
        {k: np.concatenate([r.recorded[k] for r in results], axis=1) for k in first.recorded})


def _simulate_batch(graph: Graph, x: np.ndarray, timesteps: int, schedule: str, encoder: str,
                    dtype: type, seed: int, first: int, record: set[str],
                    progress: Callable[[int], None] | None) -> SimResult:
    strict = schedule == "loihi"
    fan = fanout(graph)
    remaining = {n.name: 0 for n in graph.nodes}
    for n in graph.nodes:
        for i in n.inputs:
            remaining[i] += 1
    keep = set(record) | set(graph.outputs)
    values: dict[str, _Val] = {}
    spikes: dict[str, np.ndarray] = {}
    neurons: dict[str, int] = {}
    sops = np.zeros(timesteps)
    predictions: dict[str, np.ndarray] = {}
    spiking: set[str] = set()  # nodes whose output is spikes (populations, Poisson input, views)
    for node in graph.nodes:
        ins = [values[i] for i in node.inputs]
        if isinstance(node, Input):
            if type(node) in INPUT_RUNNERS:
                val = _Val(INPUT_RUNNERS[type(node)](node, x, timesteps, dtype), False)
            else:
                val = encode(x, timesteps, encoder, seed, dtype, first)
            if encoder == "poisson":
                spikes[node.name] = val.data.reshape(timesteps, -1).sum(axis=1)
                sops += spikes[node.name] * fan[node.name]
                spiking.add(node.name)
            if strict:
                val = _delay(val, timesteps)
        elif type(node) in POPULATION_RUNNERS:
            out, counts = POPULATION_RUNNERS[type(node)](node, ins[0], timesteps, strict, dtype)
            spikes[node.name] = counts
            neurons[node.name] = int(np.prod(node.shape))
            sops += counts * fan[node.name]
            spiking.add(node.name)
            val = _Val(out, False)
            if strict:
                val = _delay(val, timesteps)
        elif isinstance(node, MaxPoolGate):
            val = _maxpool_gate(node, ins[0], timesteps)
            if node.inputs[0] in spiking:  # the spikes it passes (counted when they arrive)
                spiking.add(node.name)
                sops += np.count_nonzero(val.data.reshape(timesteps, -1), axis=1) * fan[node.name]
        elif isinstance(node, Readout):
            data = np.broadcast_to(ins[0].data, (timesteps,) + ins[0].data.shape[1:])
            steps = np.arange(1, timesteps + 1, dtype=np.float64).reshape(
                (timesteps,) + (1,) * (data.ndim - 1))
            if type(node) in READOUT_RUNNERS:
                predictions[node.name] = READOUT_RUNNERS[type(node)](node, data)
            else:
                predictions[node.name] = np.cumsum(data, axis=0, dtype=np.float64) / steps
            val = _Val(data, False)
        else:
            val = _run_stateless(node, ins, timesteps)
            if isinstance(node, VIEWS) and all(i in spiking for i in node.inputs):
                spiking.add(node.name)
        values[node.name] = val
        for i in node.inputs:
            remaining[i] -= 1
            if remaining[i] == 0 and i not in keep:
                del values[i]
    recorded = {k: np.broadcast_to(values[k].data, (timesteps,) + values[k].data.shape[1:])
                for k in record}
    if progress is not None:
        progress(len(x))
    return SimResult(timesteps, len(x), predictions, spikes, neurons, sops, recorded)


__all__ = ["ENCODERS", "INPUT_RUNNERS", "POPULATION_RUNNERS", "READOUT_RUNNERS", "SCHEDULES",
           "SimResult", "encode", "fanout", "simulate"]
