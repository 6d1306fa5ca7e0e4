"""Spiking node types of the IR: integrate-and-fire populations, the readout, the max-pool gate.

An SNN graph is an ANN graph whose ReLUs became ``IF`` populations: the linear nodes (Dense, Conv,
AvgPool, Affine, Add, views) are the synapses between populations and carry the ANN's weights and
biases unchanged; a population sends ``out_scale`` for every spike (threshold balancing: θ = λ,
out_scale = λ, so currents stay in ANN units). ``forward`` of each node is its rate-coding limit,
i.e. what the mean output converges to as T grows; the time-step semantics live in the simulator
(``onnx2snn.backends.numpy``), which is the executable form of the contract in DESIGN.md §3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from onnx2snn.ir.nodes import MaxPool, Node, Shape, array_field

RESETS = ("subtract", "zero")


@dataclass(frozen=True, eq=False, kw_only=True)
class IF(Node):
    """A population of integrate-and-fire neurons, one per element of ``shape``.

    At each step t, with input current I[t] (sum of the synapses into it) plus ``bias``:

        v ← v + I[t] + bias
        s[t] = 1 if v ≥ θ else 0          (the "loihi" schedule uses v > θ)
        subtract reset: v ← v − θ·s[t];   zero reset: v ← 0 where s[t] = 1
        output[t] = out_scale · s[t]

    v starts at ``v0``. ``threshold`` (θ), ``out_scale``, ``v0`` and ``bias`` broadcast against
    ``shape`` (scalars, per channel (C, 1, 1) or per neuron). Units: θ, v, I are in the ANN's
    pre-activation units divided by nothing (threshold balancing keeps weights as in the ANN).
    """

    kind: ClassVar[str] = "if"
    threshold: np.ndarray = array_field()
    out_scale: np.ndarray = array_field()
    v0: np.ndarray = array_field()
    bias: np.ndarray | None = array_field(optional=True)
    reset: str = "subtract"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reset not in RESETS:
            raise self.fail(f"reset must be one of {RESETS}, got {self.reset!r}")
        if not np.all(self.threshold > 0) or not np.all(np.isfinite(self.threshold)):
            raise self.fail("thresholds must be positive and finite")

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        for name in ("threshold", "out_scale", "v0", "bias"):
            a = getattr(self, name)
            if a is not None and np.broadcast_shapes(a.shape, s) != tuple(s):
                raise self.fail(f"{name} of shape {a.shape} does not broadcast to {s}")
        return tuple(s)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        """Rate limit: out_scale · clip((I + bias)/θ, 0, 1) (at most one spike per step)."""
        current = xs[0] if self.bias is None else xs[0] + self.bias
        return self.out_scale * np.clip(current / self.threshold, 0.0, 1.0)

    def n_params(self) -> int:
        return 0


@dataclass(frozen=True, eq=False, kw_only=True)
class Readout(Node):
    """The non-spiking output: accumulates its input; the prediction at step t is Σ_{τ≤t} I[τ] / t."""

    kind: ClassVar[str] = "readout"

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        return in_shapes[0]

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        return xs[0]


@dataclass(frozen=True, eq=False, kw_only=True)
class MaxPoolGate(MaxPool):
    """Spiking max pooling: in each window, pass the spike of the input whose accumulated output
    (spike count × scale) is largest so far (ties: the first in row-major order), at the steps
    where that largest accumulated output grows; an input that only draws level sends nothing.

    Rate limit: the max pool of the input rates (for spikes of one scale, exactly at every T).
    """

    kind: ClassVar[str] = "maxpool_gate"


__all__ = ["IF", "RESETS", "MaxPoolGate", "Readout"]
