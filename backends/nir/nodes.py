"""IR node kinds for graphs read from NIR files, and their simulator runners.

A NIR file means something of its own (DESIGN.md §6): its ``IF`` resets *to* ``v_reset``, fires on
``v > v_threshold`` and sends binary spikes. ``NirNeuron`` is that population (and, with
``reset="subtract"``, the exact soft-reset loop ``I → Threshold → Scale(−θ) → I``; with a nonzero
``leak`` a NIR ``LIF``), stepped by ``run_nir_neuron``: per step v ← v + leak·(v_leak − v) +
gain·I[t], s = v > θ, then v ← v_reset (or v − θ) where s; ``SumPool`` is NIR's ``SumPool2d``.
Importing this module registers both kinds with the IR (for save/load) and ``NirNeuron``'s runner
with the reference simulator, so a graph read from a ``.nir`` file runs in the same simulator as
every other SNN graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from onnx2snn.backends.numpy.simulator import POPULATION_RUNNERS
from onnx2snn.ir.nodes import AvgPool, Node, Shape, array_field

NIR_RESETS = ("zero", "subtract")


@dataclass(frozen=True, eq=False, kw_only=True)
class NirNeuron(Node):
    """A population under NIR's semantics, one NIR time unit (dt) per step.

    At each step t, with input current I[t] (sum of all edges into the population):

        v ← v + leak·(v_leak − v) + gain·I[t]
        s[t] = 1 if v > θ else 0                       (strict, as NIR's IF / Threshold)
        zero reset:     v ← v_reset where s[t] = 1      (NIR IF / LIF)
        subtract reset: v ← v − θ·s[t]                  (the I → Threshold → Scale(−θ) → I loop)
        output[t] = s[t]                                (binary spikes)

    v starts at 0 (NIR has no initial state). NIR ``IF(r, v_threshold, v_reset)``: gain = r·dt,
    leak = 0; ``LIF(tau, r, v_leak, ...)`` (forward Euler): gain = r·dt/τ, leak = dt/τ. All
    arrays broadcast against ``shape``.
    """

    kind: ClassVar[str] = "nir_neuron"
    threshold: np.ndarray = array_field()
    gain: np.ndarray = array_field()
    v_reset: np.ndarray = array_field()
    leak: np.ndarray | None = array_field(optional=True)
    v_leak: np.ndarray | None = array_field(optional=True)
    reset: str = "zero"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reset not in NIR_RESETS:
            raise self.fail(f"reset must be one of {NIR_RESETS}, got {self.reset!r}")

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        for name, a in self.arrays().items():
            if np.broadcast_shapes(a.shape, s) != tuple(s):
                raise self.fail(f"{name} of shape {a.shape} does not broadcast to {s}")
        return tuple(s)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        """Rate limit of a non-leaky subtract-reset neuron: clip(gain·I/θ, 0, 1) spikes per step."""
        return np.clip(self.gain * xs[0] / self.threshold, 0.0, 1.0)

    def n_params(self) -> int:
        return 0


@dataclass(frozen=True, eq=False, kw_only=True)
class SumPool(AvgPool):
    """NIR ``SumPool2d``: y[c, i, j] = sum of x[c] over window (i, j) (padding reads zero)."""

    kind: ClassVar[str] = "sumpool"

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        avg = AvgPool.forward(self.replace(count_include_pad=True), *xs)  # type: ignore[arg-type]
        return avg * float(self.kernel[0] * self.kernel[1])


def run_nir_neuron(node: NirNeuron, current: object, timesteps: int, strict: bool,
                   dtype: type, state: dict[str, np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Step a ``NirNeuron`` population (NIR semantics: always strict ``v > θ``; the schedule's
    ``strict`` flag does not apply). Returns (spikes (T, B, ...), spikes per step (T,)); v
    carries over between calls (chunks of steps) in ``state``."""
    data = current.data  # type: ignore[attr-defined]
    static = current.static  # type: ignore[attr-defined]
    b = data.shape[1]
    shape = (b,) + node.shape
    theta: np.ndarray = np.broadcast_to(node.threshold.astype(dtype), node.shape)
    gain: np.ndarray = node.gain.astype(dtype)
    v_reset: np.ndarray = np.broadcast_to(node.v_reset.astype(dtype), shape)
    leak: np.ndarray | None = (None if node.leak is None or not np.any(node.leak)
                               else node.leak.astype(dtype))
    v_leak: np.ndarray = np.zeros((), dtype) if node.v_leak is None else node.v_leak.astype(dtype)
    state = {} if state is None else state
    v: np.ndarray = state.setdefault("v", np.zeros(shape, dtype=dtype))
    out: np.ndarray = np.empty((timesteps,) + shape, dtype=dtype)
    spikes = np.empty(shape, dtype=bool)
    for t in range(timesteps):
        if leak is not None:
            v += leak * (v_leak - v)
        v += gain * data[0 if static else t]
        np.greater(v, theta, out=spikes)
        if node.reset == "subtract":
            v -= theta * spikes
        else:
            np.copyto(v, v_reset, where=spikes)
        out[t] = spikes
    return out, np.count_nonzero(out.reshape(timesteps, -1), axis=1).astype(np.float64)


POPULATION_RUNNERS[NirNeuron] = run_nir_neuron

__all__ = ["NIR_RESETS", "NirNeuron", "SumPool", "run_nir_neuron"]
