"""The IF population of the reference simulator, stepped over a chunk of time steps.

Per step t, elementwise over (B, *shape) in the simulator's float type:

    v ← v + I[t] (+ b);  s = v ≥ θ  (v > θ when strict);  out[t] = λ·s;
    v ← v − θ·s  (soft reset)  or  v ← 0 where s

with θ the threshold, λ the output scale (the value a spike carries) and b a constant input
current. With finite θ and λ, multiplying by the 0/1 spike gives the same bits as subtracting or
scaling only where it fired (θ·1 = θ, v − 0 = v); masked NumPy operations (``where=``) were 1.7×
slower per neuron·step than these plain ones (docs/performance.md). Where λ equals θ, as
conversion makes them, the soft reset subtracts out[t] itself: one pass fewer, the same bits.

Measured and left: stepping blocks of a population (halves of the samples) in two threads at
once, which NumPy's elementwise operations allow as they release the GIL, was no faster on 2^20
neurons and slower below (the hand-off per operation costs about what the operation does).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnx2snn.ir.spiking import IF


def run_if(node: IF, current: Any, steps: int, strict: bool, dtype: type,
           state: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Step an IF population through ``steps`` steps of ``current`` (the simulator's value:
    ``data`` (steps or 1, B, ...) and ``static``): (output values (steps, B, ...), spikes per
    step (steps,)). The membrane potential carries over between calls in ``state``."""
    state = {} if state is None else state
    b = current.data.shape[1]
    shape = (b,) + node.shape
    theta: np.ndarray = node.threshold.astype(dtype)
    scale: np.ndarray = node.out_scale.astype(dtype)
    v: np.ndarray | None = state.get("v")
    if v is None:
        v = state["v"] = np.broadcast_to(node.v0.astype(dtype), shape).copy()
    bias: np.ndarray | None = None if node.bias is None else node.bias.astype(dtype)
    plain = bool(np.isfinite(theta).all() and np.isfinite(scale).all())  # else θ·0 is NaN
    same_scale = plain and theta.shape == scale.shape and bool(np.array_equal(theta, scale))
    out: np.ndarray = np.empty((steps,) + shape, dtype=dtype)
    spikes = np.empty(shape, dtype=bool)
    work: np.ndarray | None = None if same_scale else np.empty(shape, dtype=dtype)
    counts = np.empty(steps)
    compare = np.greater if strict else np.greater_equal
    for t in range(steps):
        v += current.data[0 if current.static else t]
        if bias is not None:
            v += bias
        compare(v, theta, out=spikes)
        if plain:
            np.multiply(spikes, scale, out=out[t])
        else:
            out[t] = spikes
            out[t] *= scale
        if node.reset != "subtract":
            v[spikes] = 0.0
        elif work is None:  # λ = θ: the spikes' values are what the reset subtracts
            v -= out[t]
        elif plain:
            np.multiply(spikes, theta, out=work)
            v -= work
        else:
            np.subtract(v, theta, out=v, where=spikes)
        counts[t] = np.count_nonzero(spikes)
    return out, counts


__all__ = ["run_if"]
