"""The reference simulator: the executable form of the time-step contract (DESIGN.md §3).

The SNN graph is feed-forward, so the simulator runs it *layer by layer over a chunk of time
steps at once*: every node's output is an array (steps, B, *shape) for the chunk's steps.
Synapse nodes (Dense, Conv, pools, Affine, views) are stateless and run as one batched call on
(steps·B, *shape) — one matrix product for the whole chunk (Dense and Conv through onnxruntime,
see ``kernels``). Only populations loop over t, elementwise over (B, *shape), and carry their
state (v) from one chunk to the next (the IF population: ``neurons.run_if``):

    v ← v + I[t] (+ bias);  s = v ≥ θ  (loihi: v > θ);  v ← v − θ·s  or  v ← 0 where s;
    out[t] = out_scale · s

Schedules: ``ideal`` — a population answers in the step its input arrives; ``loihi`` — every
source (the input encoder and each population) reaches its synapses one step later (Lava's Dense/
Conv send the previous step's sum; biases, which live in the neuron on Loihi, are not delayed).
Encoders: ``direct`` (the analog input every step), ``poisson`` (Bernoulli spikes with p = x,
seeded). A time-constant input (direct encoding) passes through the first synapses once, not T
times. The readout accumulates its input; the prediction at step t is Σ_{τ≤t} I[τ] / t, so one
run to T yields predictions for every t ≤ T.

Memory: the run streams over batches of samples and chunks of steps whose size a memory budget
picks (``memory``: how much one sample and one step cost, per node); only the readout's currents
and recorded nodes are kept for all T. How a run is cut changes no bit of its result with the
onnxruntime kernels and in fixed point (``kernels`` says why). docs/performance.md has figures.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from onnx2snn.backends.numpy.kernels import argmax_pool_kernel, synapse_kernels
from onnx2snn.backends.numpy.memory import (
    CACHE_TARGET,
    Plan,
    default_memory,
    footprint,
    parse_memory,
    plan,
)
from onnx2snn.backends.numpy.neurons import run_if
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
      encoder) sends at step t are recorded at t + 1, while ``spikes`` counts them at t;
    * ``plan``: the batch and chunk sizes the run used and its estimated peak memory;
    * ``events``: {source: (T,)} events per step summed over the batch (spikes of populations
      and of the Poisson input, values a max-pool gate passes on), integers: results of several
      batches or processes merge exactly by summing them, and ``sops`` = Σ events · ``fan``
      (``sops_from_events``; ``fan``: each source's fan-out) has the same bits however the data
      was split.
    """

    timesteps: int
    batch: int
    predictions: dict[str, np.ndarray]
    spikes: dict[str, np.ndarray]
    neurons: dict[str, int]
    sops: np.ndarray
    recorded: dict[str, np.ndarray] = field(default_factory=dict)
    plan: Plan | None = None  # how the run was cut into batches and chunks of steps
    events: dict[str, np.ndarray] = field(default_factory=dict)
    fan: dict[str, float] = field(default_factory=dict)  # fan-out of each source in ``events``

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
    """A node's output over the steps of one chunk: ``data`` is (steps, B, ...) or, if ``static``
    (the same at every step), (1, B, ...)."""

    data: np.ndarray
    static: bool

    def full(self, steps: int) -> np.ndarray:
        """The (steps, B, ...) array (a read-only view when static)."""
        return np.broadcast_to(self.data, (steps,) + self.data.shape[1:])


class PoissonStream:
    """Seeded Bernoulli spikes with p = clip(x, 0, 1), drawn chunk by chunk.

    Sample i (``first`` is the index of x[0] in the whole data set) has its own generator seeded
    with (seed, first + i), so its spikes depend neither on how the data is batched nor on how
    the steps are chunked (a generator draws the same numbers in one call or in several).
    """

    def __init__(self, x: np.ndarray, seed: int, dtype: type, first: int = 0) -> None:
        self.p: np.ndarray = np.clip(x.astype(dtype, copy=False), 0.0, 1.0)
        self.dtype = dtype
        self.rngs = [np.random.default_rng([seed, first + i]) for i in range(len(x))]

    def draw(self, steps: int) -> np.ndarray:
        """The spikes of the next ``steps`` steps, (steps, B, ...)."""
        u = np.empty((steps,) + self.p.shape)
        for i, rng in enumerate(self.rngs):
            u[:, i] = rng.random((steps,) + self.p.shape[1:])
        return (u < self.p).astype(self.dtype)


def encode(x: np.ndarray, timesteps: int, encoder: str, seed: int, dtype: type,
           first: int = 0) -> _Val:
    """The input layer: ``direct`` (x every step) or ``poisson`` (spikes with p = clip(x, 0, 1)),
    for ``timesteps`` steps at once (see ``PoissonStream``)."""
    if encoder == "direct":
        return _Val(x.astype(dtype, copy=False)[None], True)
    if encoder == "poisson":
        return _Val(PoissonStream(x, seed, dtype, first).draw(timesteps), False)
    raise BackendError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")


def _delay(v: _Val, steps: int, state: dict[str, Any]) -> _Val:
    """Shift by one step: out[t] = in[t-1], out[0] = the previous chunk's last step (0 at first).

    The loihi schedule's synapse latency. A static input stays static once its previous step
    was the same static value.
    """
    last: _Val | None = state.get("last")
    if v.static and last is not None and last.static:
        return v
    data = v.full(steps)
    out = np.empty_like(data)
    out[0] = 0 if last is None else last.data[0]
    out[1:] = data[:-1]
    state["last"] = v if v.static else _Val(data[-1:].copy(), False)
    return _Val(out, False)


def _run_stateless(node: Node, inputs: list[_Val], steps: int,
                   kernel: Callable[..., np.ndarray]) -> _Val:
    static = all(v.static for v in inputs)
    n = 1 if static else steps
    arrays = [v.full(n) for v in inputs]
    t, b = arrays[0].shape[:2]
    flat = [a.reshape((t * b,) + a.shape[2:]) for a in arrays]
    y = kernel(*flat)
    return _Val(y.reshape((t, b) + y.shape[1:]).astype(arrays[0].dtype, copy=False), static)


# Population node type -> function stepping it through time. Other modules (fixed-point Loihi
# neurons, NIR neurons) register their own kinds here. A runner is called as
# runner(node, current, steps, strict, dtype, state=state) once per chunk of steps and returns
# (outputs (steps, B, ...), spikes per step (steps,)); it keeps what must carry over to the next
# chunk (membrane potentials) in the dict ``state``, which starts empty for every batch. A
# runner without a ``state`` parameter is called once for all T steps (no streaming over time).
PopulationRunner = Callable[..., tuple[np.ndarray, np.ndarray]]
POPULATION_RUNNERS: dict[type, PopulationRunner] = {IF: run_if}
# Input and readout subclasses with their own encoding / read-back (fixed-point Loihi): an input
# runner maps (node, x, steps, dtype, start=t0) to the encoder's output for steps t0..t0+steps-1
# (steps, B, ...) before the schedule's delay (without a ``start`` parameter it is called once
# for all T steps); a readout runner maps (node, currents (T, B, ...)) to the predictions at
# every step, once all T steps have run.
InputRunner = Callable[..., np.ndarray]
ReadoutRunner = Callable[[Any, np.ndarray], np.ndarray]
INPUT_RUNNERS: dict[type, InputRunner] = {}
READOUT_RUNNERS: dict[type, ReadoutRunner] = {}


@functools.lru_cache(maxsize=256)  # asked for every population in every chunk
def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` (a runner that can stream over time)."""
    return name in inspect.signature(fn).parameters


def streams_over_time(graph: Graph) -> bool:
    """Whether every population and input runner of ``graph`` can run chunk by chunk."""
    for n in graph.nodes:
        if type(n) in POPULATION_RUNNERS and not _accepts(POPULATION_RUNNERS[type(n)], "state"):
            return False
        if type(n) in INPUT_RUNNERS and not _accepts(INPUT_RUNNERS[type(n)], "start"):
            return False
    return True


def _maxpool_gate(node: MaxPoolGate, x: _Val, steps: int, state: dict[str, Any]) -> _Val:
    """Pass, per window and step, the input that raises the window's largest accumulated sum.

    With A_i(t) = Σ_{τ≤t} x_i[τ] the accumulated input i of a window and M(t) = max_i A_i(t)
    (M(0) = 0), the gate sends at step t the input x_w[t] of the leader w = argmax_i A_i(t)
    (ties: the first in row-major order) when M(t) > M(t−1), and nothing otherwise. For spikes
    of one scale λ (a channel of one population) the count it sends up to any t is exactly the
    largest input count, so its rate is the max pool of the input rates at every T; an input
    that only draws level with the leader sends nothing (passing it too would overcount by
    up to one spike per tie).

    The sums are added one step after the other, A(t) = A(t−1) + x[t] (the bits of a
    cumulative sum), and carry over between chunks in ``state`` with the last M; M and the
    leader come from ``kernels.argmax_pool_kernel`` (onnxruntime's MaxPool with indices).
    """
    data = x.full(steps)
    t, b = data.shape[:2]
    acc = np.empty(data.shape, dtype=data.dtype)
    before = state.get("acc")
    running = np.zeros_like(data[0]) if before is None else before
    for i in range(t):
        running = np.add(running, data[i], out=acc[i])
    state["acc"] = acc[-1].copy()
    flat_shape = (t * b,) + data.shape[2:]
    top, leader = argmax_pool_kernel(node, data.shape[2:], data.dtype.type)(acc.reshape(flat_shape))
    top = top.reshape((t, b) + top.shape[1:])
    last = state.get("top")
    previous = np.empty_like(top)
    previous[0] = 0.0 if last is None else last  # M(0) = 0: every window starts at zero sums
    previous[1:] = top[:-1]
    state["top"] = top[-1].copy()
    sent = np.take(data.reshape(-1), leader).reshape(top.shape)
    sent[top <= previous] = 0.0  # M did not grow: nothing passes
    return _Val(sent, False)


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


def sops_from_events(events: Mapping[str, np.ndarray], fan: Mapping[str, float],
                     timesteps: int) -> np.ndarray:
    """Synaptic operations per step: Σ over the sources of ``events`` (in its order, which the
    simulator makes the graph's) of events × fan-out (``fanout``). The same events give the
    same bits, however they were summed over batches, shards or processes."""
    sops = np.zeros(timesteps)
    for name, counts in events.items():
        sops += counts * fan[name]
    return sops


def simulate(graph: Graph, x: np.ndarray, timesteps: int, *, schedule: str = "ideal",
             encoder: str = "direct", dtype: type = np.float32, seed: int = 0,
             record: Iterable[str] = (), batch_size: int | None = None,
             memory: int | str | None = None, chunk: int | None = None,
             kernels: str = "auto", progress: Callable[[int], None] | None = None,
             first_sample: int = 0) -> SimResult:
    """Simulate ``graph`` on inputs ``x`` (N, *input shape) for ``timesteps`` steps.

    The run streams over batches of samples and chunks of steps sized to fit ``memory`` (bytes,
    or text such as "4GB"; default ``memory.default_memory()``), with at most ``batch_size``
    samples and ``chunk`` steps at once when these are given; without ``chunk`` the cut is also
    kept near a cache-sized working set (``memory.CACHE_TARGET``), which is faster; see
    ``backends.numpy.memory``. How the run is cut does not change the result. ``kernels``
    chooses how the synapse layers run (see ``backends.numpy.kernels``). The plan used is in
    ``SimResult.plan``.

    ``first_sample`` is the index of x[0] in the whole data set: Poisson spikes are seeded per
    sample index, so a shard of the data (``onnx2snn.parallel``) gets the spikes a whole run would.
    """
    if schedule not in SCHEDULES:
        raise BackendError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if encoder not in ENCODERS:
        raise BackendError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    if timesteps < 1:
        raise BackendError("timesteps must be at least 1")
    if chunk is not None and chunk < 1:
        raise BackendError("the chunk of time steps must be at least 1")
    wanted = set(record)
    missing = sorted(wanted - {n.name for n in graph.nodes})
    if missing:
        raise BackendError(f"cannot record {', '.join(map(repr, missing))}: no such node")
    n = len(x)
    budget = default_memory() if memory is None else parse_memory(memory)
    fp = footprint(graph, np.dtype(dtype).itemsize, POPULATION_RUNNERS, wanted)
    max_chunk = chunk if streams_over_time(graph) else timesteps
    # without an explicit chunk the cut also aims at a cache-sized working set (speed only: any
    # cut gives the same bits)
    target = CACHE_TARGET if chunk is None and streams_over_time(graph) else None
    cut = plan(fp, n, timesteps, budget=budget, batch_size=batch_size, max_chunk=max_chunk,
               target=target)
    ops = synapse_kernels(graph, dtype, kernels)
    results = [_simulate_batch(graph, x[s:s + cut.batch], timesteps, schedule, encoder, dtype,
                               seed, first_sample + s, wanted, cut.chunk, ops, progress)
               for s in range(0, n, cut.batch)]
    first = results[0]
    first.plan = cut
    if len(results) == 1:
        return first
    # several batches, so each sum is an array (never sum()'s start value 0); counts are
    # integers, so the sums are exact and SOPs follow from them with the bits of one batch
    events = {k: cast(np.ndarray, sum(r.events[k] for r in results)) for k in first.events}
    return SimResult(
        timesteps, n,
        {k: np.concatenate([r.predictions[k] for r in results], axis=1) for k in first.predictions},
        {k: cast(np.ndarray, sum(r.spikes[k] for r in results)) for k in first.spikes},
        first.neurons,
        sops_from_events(events, first.fan, timesteps),
        {k: np.concatenate([r.recorded[k] for r in results], axis=1) for k in first.recorded},
        cut, events, first.fan)


def _simulate_batch(graph: Graph, x: np.ndarray, timesteps: int, schedule: str, encoder: str,
                    dtype: type, seed: int, first: int, record: set[str], chunk: int,
                    ops: dict[str, Callable[..., np.ndarray]],
                    progress: Callable[[int], None] | None) -> SimResult:
    """Run one batch through all steps, ``chunk`` steps at a time, carrying state over."""
    consumers = {n.name: 0 for n in graph.nodes}
    for n in graph.nodes:
        for i in n.inputs:
            consumers[i] += 1
    state: dict[str, dict[str, Any]] = {n.name: {} for n in graph.nodes}  # runners' carry-over
    delays: dict[str, dict[str, Any]] = {n.name: {} for n in graph.nodes}  # loihi latency
    static_cache: dict[str, _Val] = {}  # time-constant outputs, the same in every chunk
    poisson = PoissonStream(x, seed, dtype, first) if encoder == "poisson" else None
    parts: dict[str, list[np.ndarray]] = {}  # spikes per step, per population
    events: dict[str, list[np.ndarray]] = {}  # events per step, per source
    currents: dict[str, list[np.ndarray]] = {}  # readout inputs
    recorded: dict[str, list[np.ndarray]] = {k: [] for k in record}
    neurons: dict[str, int] = {}
    for t0 in range(0, timesteps, chunk):
        steps = min(chunk, timesteps - t0)
        _run_chunk(graph, x, t0, steps, schedule == "loihi", dtype, poisson, consumers,
                   state, delays, static_cache, ops, parts, events, currents, recorded, neurons)
    predictions: dict[str, np.ndarray] = {}
    for name, chunks in currents.items():
        node = graph[name]
        data = np.concatenate(chunks)
        if type(node) in READOUT_RUNNERS:
            predictions[name] = READOUT_RUNNERS[type(node)](node, data)
        else:
            steps_col = np.arange(1, timesteps + 1, dtype=np.float64).reshape(
                (timesteps,) + (1,) * (data.ndim - 1))
            predictions[name] = np.cumsum(data, axis=0, dtype=np.float64) / steps_col
    if progress is not None:
        progress(len(x))
    totals = {k: np.concatenate(v) for k, v in events.items()}
    fan = fanout(graph)
    fan = {k: fan[k] for k in totals}
    return SimResult(timesteps, len(x), predictions,
                     {k: np.concatenate(v) for k, v in parts.items()}, neurons,
                     sops_from_events(totals, fan, timesteps),
                     {k: np.concatenate(v) for k, v in recorded.items()}, None, totals, fan)


def _run_chunk(graph: Graph, x: np.ndarray, t0: int, steps: int, strict: bool, dtype: type,
               poisson: PoissonStream | None, consumers: dict[str, int],
               state: dict[str, dict[str, Any]], delays: dict[str, dict[str, Any]],
               static_cache: dict[str, _Val], ops: dict[str, Callable[..., np.ndarray]],
               parts: dict[str, list[np.ndarray]], events: dict[str, list[np.ndarray]],
               currents: dict[str, list[np.ndarray]], recorded: dict[str, list[np.ndarray]],
               neurons: dict[str, int]) -> None:
    """Steps t0 .. t0+steps-1 of every node in topological order (appends to the lists)."""
    remaining = dict(consumers)
    values: dict[str, _Val] = {}
    spiking: set[str] = set()  # nodes whose output is spikes (populations, Poisson input, views)
    for node in graph.nodes:
        ins = [values[i] for i in node.inputs]
        if isinstance(node, Input):
            if type(node) in INPUT_RUNNERS:
                runner = INPUT_RUNNERS[type(node)]
                data = (runner(node, x, steps, dtype, start=t0) if _accepts(runner, "start")
                        else runner(node, x, steps, dtype))
                val = _Val(data, False)
            elif poisson is not None:
                val = _Val(poisson.draw(steps), False)
            else:
                val = _Val(x.astype(dtype, copy=False)[None], True)
            if poisson is not None:
                counts = np.count_nonzero(val.data.reshape(steps, -1), axis=1).astype(np.float64)
                parts.setdefault(node.name, []).append(counts)
                events.setdefault(node.name, []).append(counts)
                spiking.add(node.name)
            if strict:
                val = _delay(val, steps, delays[node.name])
        elif type(node) in POPULATION_RUNNERS:
            pop = POPULATION_RUNNERS[type(node)]
            if _accepts(pop, "state"):
                out, counts = pop(node, ins[0], steps, strict, dtype, state=state[node.name])
            else:
                out, counts = pop(node, ins[0], steps, strict, dtype)
            parts.setdefault(node.name, []).append(counts)
            events.setdefault(node.name, []).append(counts)
            neurons[node.name] = int(np.prod(node.shape))
            spiking.add(node.name)
            val = _Val(out, False)
            if strict:
                val = _delay(val, steps, delays[node.name])
        elif isinstance(node, MaxPoolGate):
            val = _maxpool_gate(node, ins[0], steps, state[node.name])
            if node.inputs[0] in spiking:  # the spikes it passes (counted when they arrive)
                spiking.add(node.name)
                events.setdefault(node.name, []).append(
                    np.count_nonzero(val.data.reshape(steps, -1), axis=1).astype(np.float64))
        elif isinstance(node, Readout):
            val = _Val(ins[0].full(steps), False)
            currents.setdefault(node.name, []).append(val.data)
        else:
            if all(v.static for v in ins) and node.name in static_cache:
                val = static_cache[node.name]
            else:
                val = _run_stateless(node, ins, steps, ops.get(node.name, node.forward))
                if val.static:
                    static_cache[node.name] = val
            if isinstance(node, VIEWS) and all(i in spiking for i in node.inputs):
                spiking.add(node.name)
        if node.name in recorded:
            recorded[node.name].append(val.full(steps))
        values[node.name] = val
        for i in node.inputs:
            remaining[i] -= 1
            if remaining[i] == 0:
                del values[i]


__all__ = ["ENCODERS", "INPUT_RUNNERS", "POPULATION_RUNNERS", "READOUT_RUNNERS", "SCHEDULES",
           "PoissonStream", "SimResult", "encode", "fanout", "simulate", "sops_from_events",
           "streams_over_time"]
