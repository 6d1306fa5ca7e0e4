"""The memory budget of the reference simulator: how many samples and time steps run at once.

The simulator streams over batches of samples and, within a batch, over chunks of time steps
(a population's state carries over between chunks). Its memory is then, in bytes,

    M(B, Tc) ≈ fixed + B·(state + T·kept) + B·Tc·work

* ``work``: bytes per sample and step of the node outputs alive at once (the peak over the
  topological order, freeing each output after its last consumer, as the simulator does), times
  ``WORK_FACTOR`` for the temporaries of the kernels (a conv's output before its bias is added, a
  population's spikes before scaling);
* ``state``: bytes per sample carried between chunks (membrane potentials, max-pool-gate sums);
* ``kept``: bytes per sample and step kept for the whole run: the readout currents and
  predictions, and the outputs of the nodes asked for with ``record``;
* ``fixed``: the model's parameters (twice: the graph's and the onnxruntime sessions' copies)
  and, for networks with convolutions, the bounded scratch space of ``numerics``' im2col.

``plan`` picks the largest batch (at most ``batch_size``) and then the largest chunk that fit a
budget, and spreads samples and steps evenly over the batches and chunks. For speed it then
shrinks the cut to a working set of about ``target`` bytes (``CACHE_TARGET``, 32 MiB: the node
outputs of one chunk, B·Tc·work): first the chunk of steps, down to one step, then the batch,
down to ``MIN_BATCH`` samples. Arrays that big stay in this size class of the CPU caches and in
the heap the allocator reuses; a chunk of hundreds of MB is fresh memory on every call, which the
kernel page-faults in (measured: 4-10× slower on the bundled nets, much of it system time, with
the same bits; docs/performance.md). The budget is given in
bytes or as text ("4GB", "512MiB"); by default it is ``DEFAULT_FRACTION`` of the memory the
system reports as available, at most ``DEFAULT_CAP``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from onnx2snn.errors import BackendError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.spiking import MaxPoolGate, Readout
from onnx2snn.numerics import _COL_BUDGET

WORK_FACTOR = 2.0  # kernel temporaries on top of the live node outputs
STATE_WORDS = 3  # a population keeps v and a spike mask; fixed-point SDNN keeps three words
CACHE_TARGET = 32 * 2**20  # bytes of node outputs per chunk that plan() aims for (speed)
MIN_BATCH = 8  # plan() shrinks a batch for the cache target down to this many samples
DEFAULT_FRACTION = 0.5
DEFAULT_CAP = 4 * 2**30
FALLBACK_AVAILABLE = 4 * 2**30  # when the system does not say

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def parse_memory(text: str | int) -> int:
    """Bytes from an int or a text such as ``4GB``, ``4 GiB``, ``512MB``, ``1e9``.

    Decimal units (kB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB, TiB) of 1024.
    """
    if isinstance(text, (int, np.integer)):
        value = int(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
        unit = m.group(2).lower() if m else ""
        if not m or unit not in _UNITS:
            raise BackendError(f"cannot read the memory budget {text!r}; write e.g. 4GB, "
                               "512MiB or a number of bytes")
        value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise BackendError(f"the memory budget must be positive, got {text!r}")
    return value


def available_memory() -> int:
    """Bytes the system reports as available (``MemAvailable`` of /proc/meminfo), or a fallback."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return FALLBACK_AVAILABLE


def default_memory() -> int:
    """The budget used when none is given: half the available memory, at most 4 GiB."""
    return int(min(DEFAULT_CAP, DEFAULT_FRACTION * available_memory()))


@dataclass(frozen=True)
class Footprint:
    """Per-sample memory of one simulation of a graph, in bytes (see the module docstring)."""

    work: int  # per sample and step of a chunk
    state: int  # per sample, carried between chunks
    kept: int  # per sample and step, kept for all T steps
    fixed: int  # independent of batch and T

    def bytes(self, batch: int, chunk: int, timesteps: int) -> int:
        """Estimated peak bytes with ``batch`` samples and ``chunk`` steps at once."""
        return (self.fixed + batch * (self.state + timesteps * self.kept)
                + batch * chunk * self.work)


@dataclass(frozen=True)
class Plan:
    """How a simulation is cut: ``batch`` samples at a time, ``chunk`` steps at a time."""

    batch: int
    chunk: int
    budget: int
    estimate: int  # bytes, Footprint.bytes(batch, chunk, T)


def footprint(graph: Graph, itemsize: int, populations: Collection[type],
              record: Collection[str] = ()) -> Footprint:
    """Estimate the per-sample memory of simulating ``graph`` with values of ``itemsize`` bytes.

    ``populations`` are the node types that keep state between steps (the simulator's runners).
    """
    size = {n.name: int(np.prod(n.shape)) for n in graph.nodes}
    remaining = {n.name: 0 for n in graph.nodes}
    for n in graph.nodes:
        for i in n.inputs:
            remaining[i] += 1
    live = 0
    peak = 0
    state = 0
    kept = 0
    for n in graph.nodes:
        live += size[n.name]
        peak = max(peak, live)
        if isinstance(n, Readout):
            kept += size[n.name] * (itemsize + 8)  # its currents and the float64 predictions
        elif n.name in record:
            kept += size[n.name] * itemsize
        if isinstance(n, MaxPoolGate):  # its running sums of the input and their window maxima
            state += (size[n.inputs[0]] + size[n.name]) * itemsize
        elif type(n) in populations:
            state += size[n.name] * itemsize * STATE_WORDS
        for i in n.inputs:
            remaining[i] -= 1
            if remaining[i] == 0:
                live -= size[i]
    params = sum(a.nbytes for n in graph.nodes for a in n.arrays().values())
    # NumPy's im2col buffer, when a convolution may run there (float64, fixed point, --kernels
    # numpy); counted in full even where onnxruntime runs it instead
    scratch = _COL_BUDGET if any("conv" in n.kind for n in graph.nodes) else 0
    return Footprint(work=int(WORK_FACTOR * peak * itemsize), state=state, kept=kept,
                     fixed=int(2 * params + scratch))


def plan(fp: Footprint, samples: int, timesteps: int, *, budget: int,
         batch_size: int | None = None, max_chunk: int | None = None,
         target: int | None = None) -> Plan:
    """The largest batch (≤ ``batch_size``), then the largest chunk (≤ ``max_chunk``) that fit.

    With ``target`` (bytes), the chunk and then the batch shrink until one chunk's node outputs
    (batch · chunk · ``fp.work``) are at most about ``target``: chunks down to one step,
    batches down to ``MIN_BATCH`` samples (see the module docstring). Raises ``BackendError``
    when not even one sample for one step fits the budget.
    """
    cap_b = max(1, min(samples, batch_size or samples))
    cap_t = max(1, min(timesteps, max_chunk or timesteps))
    room = budget - fp.fixed
    per_sample_min = fp.state + timesteps * fp.kept + fp.work
    if room < per_sample_min:
        need = fp.fixed + per_sample_min
        raise BackendError(
            f"the memory budget of {_fmt(budget)} is too small: one sample for one step needs "
            f"about {_fmt(need)} (of which {_fmt(timesteps * fp.kept)} for the {timesteps} steps "
            "of the readout and recorded nodes); give a larger --memory, record fewer nodes or "
            "run fewer steps")
    batch = min(cap_b, room // per_sample_min)
    chunk = min(cap_t, (room // batch - fp.state - timesteps * fp.kept) // max(fp.work, 1))
    chunk = max(1, chunk)
    if target is not None:
        work = max(fp.work, 1)
        chunk = max(1, min(chunk, target // (batch * work)))
        if chunk == 1:
            batch = max(min(batch, MIN_BATCH), min(batch, target // work))
    # even cuts: ceil(n / pieces) per piece, so that the last batch or chunk is not a sliver
    batch = -(-samples // -(-samples // batch)) if samples else 1
    chunk = -(-timesteps // -(-timesteps // chunk))
    return Plan(batch=int(batch), chunk=int(chunk), budget=budget,
                estimate=fp.bytes(int(batch), int(chunk), timesteps))


def _fmt(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


__all__ = ["CACHE_TARGET", "MIN_BATCH", "Footprint", "Plan", "available_memory",
           "default_memory", "footprint", "parse_memory", "plan"]
