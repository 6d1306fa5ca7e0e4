"""Bit-accurate fixed-point stepping of the Loihi 2 node kinds (``onnx2snn.ir.loihi``).

Importing this module registers the stepping functions of ``LoihiInput``, ``LoihiNeuron`` and
``LoihiReadout`` into the reference simulator, which then runs a quantized graph with the
arithmetic of Lava's ``fixed_pt`` CPU models, as stated and implemented in
``onnx2snn.targets.loihi2`` (shifts by 6, 24-bit wrap of u, saturation of v, strict
``v > vth``, floor of negative weight exponents, sigma-delta residues). This module only runs
those per-step functions over time, batches and chunks of steps. It must be run on the ``loihi``
schedule (one step of latency per synapse) in float64, which ``simulate_fixed`` does; the float64
carriers hold integers exactly. The synapses' integer products run in float32 where that is
provably exact (``kernels.fixed_point_kernel``: same bits, about 2× faster), in NumPy float64
elsewhere and with ``kernels="numpy"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from onnx2snn.backends.numpy.simulator import (
    INPUT_RUNNERS,
    POPULATION_RUNNERS,
    READOUT_RUNNERS,
    SimResult,
    simulate,
)
from onnx2snn.errors import BackendError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.loihi import LoihiInput, LoihiNeuron, LoihiReadout
from onnx2snn.targets import loihi2


def run_input(node: LoihiInput, x: np.ndarray, timesteps: int, dtype: type,
              start: int = 0) -> np.ndarray:
    """What the RingBuffer source sends at steps start .. start+timesteps-1 (timesteps, B, ...)."""
    q = node.quantize(x)
    out = np.broadcast_to(q, (timesteps,) + q.shape).astype(np.float64)
    if node.encoding == "delta":
        out[1 if start == 0 else 0:] = 0.0
    return out


def run_neuron(node: LoihiNeuron, current: Any, timesteps: int, strict: bool,
               dtype: type, state: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Step a Loihi population: (messages sent (T, B, ...), non-zero messages per step (T,)).

    The neuron state carries over between calls (chunks of steps) in ``state``."""
    if not strict:
        raise BackendError(f"population {node.name!r}: fixed-point Loihi neurons run only on the "
                           "'loihi' schedule")
    data = current.data
    b = data.shape[1]
    shape = (b,) + node.shape
    bias = np.broadcast_to(node.bias_int(), node.shape).astype(np.int64)
    out = np.zeros((timesteps,) + shape, dtype=np.float64)
    counts = np.zeros(timesteps)
    state = {} if state is None else state
    if node.mode == "sdnn":
        sigma, act, residue = state.get("sdnn") or tuple(np.zeros(shape, np.int64)
                                                         for _ in range(3))
        for t in range(timesteps):
            sigma, act, residue, sent = loihi2.sdnn_step(
                sigma, act, residue, data[0 if current.static else t].astype(np.int64), bias,
                node.vth)
            out[t] = loihi2.sdnn_message(sent, node.state_exp)
            counts[t] = np.count_nonzero(sent)
        state["sdnn"] = (sigma, act, residue)
        return out, counts
    reset = loihi2.RESET[node.mode]
    v = state.get("v")
    if v is None:
        v = np.broadcast_to(node.v0, node.shape).astype(np.int64) + np.zeros(shape, np.int64)
    for t in range(timesteps):
        v, s = loihi2.spiking_step(v, data[0 if current.static else t].astype(np.int64), bias,
                                   node.vth, reset)
        out[t] = s
        counts[t] = np.count_nonzero(s)
    state["v"] = v
    return out, counts


def run_readout(node: LoihiReadout, current: np.ndarray) -> np.ndarray:
    return node.predict(current)


INPUT_RUNNERS[LoihiInput] = run_input
POPULATION_RUNNERS[LoihiNeuron] = run_neuron
READOUT_RUNNERS[LoihiReadout] = run_readout


def simulate_fixed(graph: Graph, x: np.ndarray, timesteps: int, *, record: Iterable[str] = (),
                   batch_size: int | None = None, **options: Any) -> SimResult:
    """Simulate a quantized graph bit-accurately (the "loihi" schedule, float64 carriers).

    ``options`` go to ``simulate``; ``kernels="numpy"`` keeps every synapse product in NumPy
    float64 (the same bits as the default, slower)."""
    if not any(isinstance(n, LoihiNeuron) for n in graph.nodes) and not any(
            isinstance(n, LoihiInput) for n in graph.nodes):
        raise BackendError("simulate_fixed needs a graph quantized for Loihi "
                           "(onnx2snn.quantize.quantize_for_loihi)")
    return simulate(graph, x, timesteps, schedule="loihi", dtype=np.float64, record=record,
                    batch_size=batch_size, **options)


__all__ = ["run_input", "run_neuron", "run_readout", "simulate_fixed"]
