"""IR node kinds of a network quantized to Loihi 2 fixed point (made by ``onnx2snn.quantize``).

A quantized graph is a chain of Lava processes written as IR nodes: a ``LoihiInput`` source, integer
synapses (``LoihiDense``, ``LoihiConv``, both 8-bit mantissas with one exponent per layer), views
(``Reshape``) and fan-in sums (``Add``) that carry no state, ``LoihiNeuron`` populations and one
``LoihiReadout`` per output. Every value a node holds is the integer Lava is given; the float
fields (``unit``, ``scale``) only say what one integer is worth in the ANN's units, for reports and
for reading predictions back. The chip's registers and per-step equations are in
``onnx2snn.targets.loihi2`` (the reference simulator steps them in
``onnx2snn.backends.numpy.fixed_point``); ``forward`` of the synapses is exact integer arithmetic
carried in float64 (exact below 2**53): the integer product ``W_mant · x`` (``product``, a float
``Dense`` / ``Conv`` without bias, which the simulator may also run in float32 where that is
exact; ``backends.numpy.kernels.fixed_point_kernel``), then ``finish`` (exponent, wrap).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from onnx2snn import numerics
from onnx2snn.ir.nodes import Conv, Dense, Input, Node, Shape, array_field
from onnx2snn.ir.spiking import Readout
from onnx2snn.targets import loihi2
from onnx2snn.targets.loihi2 import NEURON_MODES


@dataclass(frozen=True, eq=False, kw_only=True)
class LoihiInput(Input):
    """The input source (a Lava ``RingBuffer``):
    x_int = clip(round((x − offset) · scale), 0, 2**bits − 1).

    ``encoding`` ``direct`` sends x_int every step (graded, ``bits`` message bits); ``delta`` sends
    x_int at the first step and the changes after (zero for a static image), as sigma-delta
    populations expect. ``offset`` (per channel (C, 1, 1) or per feature, ≤ 0; None for 0) lets
    inputs below zero through the unsigned messages: the host sends x − offset, and the synapses
    of the first layer add what the offset contributes back (``quantize.quantize_for_loihi``).
    """

    kind: ClassVar[str] = "loihi_input"
    scale: float = 1.0
    bits: int = 8
    encoding: str = "direct"
    offset: np.ndarray | None = array_field(optional=True)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """The integers the source sends for analog input ``x``."""
        if self.offset is not None:
            x = np.asarray(x, np.float64) - self.offset
        return loihi2.quantize_input(x, self.scale, self.bits)


@dataclass(frozen=True, eq=False, kw_only=True)
class LoihiDense(Node):
    """Integer dense synapses (a Lava ``Dense``): y = (W_mant · x) · 2**weight_exp, floored.

    ``weight_mant`` (out, in) holds signed 8-bit mantissas; Lava is given ``2·W_mant`` with
    exponent ``weight_exp − 1`` because its Dense keeps only even mixed-sign 8-bit weights.
    ``message_bits`` is 0 for binary spikes, else the width of graded messages.
    """

    kind: ClassVar[str] = "loihi_dense"
    is_synapse: ClassVar[bool] = True
    weight_mant: np.ndarray = array_field()
    weight_exp: int = 0
    message_bits: int = 0

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        if len(s) != 1 or s[0] != self.weight_mant.shape[1]:
            raise self.fail(f"input shape {s} does not fit weight {self.weight_mant.shape}")
        return (self.weight_mant.shape[0],)

    @cached_property
    def product(self) -> Dense:
        """The integer product W_mant · x as a float ``Dense`` (no bias, no exponent)."""
        return Dense(name=self.name, inputs=self.inputs, shape=self.shape,
                     weight=self.weight_mant.astype(np.float64))

    def fan_in_l1(self) -> int:
        """max over outputs o of Σ_i |W_mant[o, i]|: |W_mant · x| ≤ max|x| · this."""
        return int(np.abs(self.weight_mant.astype(np.int64)).sum(axis=1).max(initial=0))

    def finish(self, acc: np.ndarray) -> np.ndarray:
        """The output from the integer product ``acc`` (float64): the weight exponent, floored."""
        return loihi2.apply_weight_exp(acc, self.weight_exp)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        return self.finish(self.product.forward(xs[0].astype(np.float64, copy=False)))

    def macs(self, in_shapes: list[Shape]) -> int:
        return int(self.weight_mant.size)


# The synapse layers whose output wrapped around 24 bits while a ``watch_wraps()`` block ran
# (None outside one). Lava wraps the same way, so a wrap is bit-exact and still wrong: the
# network no longer computes the ANN's function (``quantize.check_ranges`` refuses it).
_WRAPPED: ContextVar[set[str] | None] = ContextVar("loihi_wrapped", default=None)


@contextmanager
def watch_wraps() -> Iterator[set[str]]:
    """Collect, in the set it yields, the names of the LoihiConv nodes whose output wraps."""
    seen: set[str] = set()
    token = _WRAPPED.set(seen)
    try:
        yield seen
    finally:
        _WRAPPED.reset(token)


@dataclass(frozen=True, eq=False, kw_only=True)
class LoihiConv(Node):
    """Integer 2-D convolution (a Lava ``Conv``): y = wrap24(conv(x, W_mant · 2**weight_exp)).

    ``weight_exp`` is never negative: Lava's CPU Conv models ignore the exponent, so the builder
    passes ``W_mant · 2**weight_exp`` as the weights (on the chip the exponent register does it).
    ``pads`` is symmetric (y, x) padding as Lava takes it; layout here is the IR's (C, H, W).
    """

    kind: ClassVar[str] = "loihi_conv"
    is_synapse: ClassVar[bool] = True
    weight_mant: np.ndarray = array_field()
    weight_exp: int = 0
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int] = (0, 0)
    dilations: tuple[int, int] = (1, 1)
    groups: int = 1
    message_bits: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight_exp < 0:
            raise self.fail("weight_exp must be >= 0 (Lava's CPU Conv ignores the exponent)")

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        o, cg, kh, kw = self.weight_mant.shape
        if len(s) != 3 or s[0] != cg * self.groups:
            raise self.fail(f"input shape {s} does not fit weight {self.weight_mant.shape}")
        oh = numerics.conv_output_size(s[1], kh, self.strides[0], self.pads[0], self.pads[0],
                                       self.dilations[0])
        ow = numerics.conv_output_size(s[2], kw, self.strides[1], self.pads[1], self.pads[1],
                                       self.dilations[1])
        return (o, oh, ow)

    def weight_int(self) -> np.ndarray:
        """The effective integer weights W_mant · 2**weight_exp (O, C/groups, KH, KW)."""
        return self.weight_mant.astype(np.int64) * (1 << self.weight_exp)

    @cached_property
    def product(self) -> Conv:
        """The integer product conv(x, W_mant) as a float ``Conv`` (no bias, no exponent)."""
        py, px = self.pads
        return Conv(name=self.name, inputs=self.inputs, shape=self.shape,
                    weight=self.weight_mant.astype(np.float64), strides=self.strides,
                    pads=(py, px, py, px), dilations=self.dilations, groups=self.groups)

    def fan_in_l1(self) -> int:
        """max over output channels o of Σ_{c,u,v} |W_mant[o, c, u, v]|: every output of
        conv(x, W_mant) is at most max|x| · this in magnitude (padding only drops terms)."""
        w = np.abs(self.weight_mant.astype(np.int64))
        return int(w.reshape(len(w), -1).sum(axis=1).max(initial=0))

    def finish(self, acc: np.ndarray) -> np.ndarray:
        """The output from the integer product ``acc`` (float64): times 2**weight_exp (exact),
        wrapped to 24 bits (``loihi2.wrap24``, the identity where nothing leaves the range)."""
        acc = acc * float(1 << self.weight_exp) if self.weight_exp else acc
        out = loihi2.wrap24(acc)
        if out is not acc:  # wrap24 returns its input itself when nothing leaves the range
            seen = _WRAPPED.get()
            if seen is not None:
                seen.add(self.name)
        return out

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        return self.finish(self.product.forward(xs[0].astype(np.float64, copy=False)))

    def macs(self, in_shapes: list[Shape]) -> int:
        o, cg, kh, kw = self.weight_mant.shape
        return int(np.prod(self.shape) * cg * kh * kw)


@dataclass(frozen=True, eq=False, kw_only=True)
class LoihiNeuron(Node):
    """A population of Loihi 2 neurons in one of three modes (one ``vth`` per population).

    ``lif`` (Lava ``LIF``: reset to zero), ``if-subtract`` (our ``IFSubtract``: reset by
    subtraction, simulation only) and ``sdnn`` (Lava ``SigmaDelta``, ReLU); their per-step
    equations and register widths are in ``onnx2snn.targets.loihi2``. Spiking modes: ``vth`` is
    the threshold mantissa (compared as vth << 6), bias and ``v0`` (the initial v) are in v units.
    ``sdnn``: ``vth`` and bias in state units, messages are the sent change >> ``state_exp``.
    ``unit`` (broadcasting to ``shape``) is the ANN value of one output integer: the spike's
    worth λ, or 1/gain of a graded activation.
    """

    kind: ClassVar[str] = "loihi_neuron"
    mode: str = "lif"
    vth: int = 1
    bias_mant: np.ndarray = array_field()
    bias_exp: int = 0
    v0: np.ndarray = array_field()
    unit: np.ndarray = array_field()
    state_exp: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in NEURON_MODES:
            raise self.fail(f"mode must be one of {NEURON_MODES}, got {self.mode!r}")
        if not 0 < self.vth <= (loihi2.VTH_MAX if self.mode != "sdnn" else loihi2.SDNN_VTH_MAX):
            raise self.fail(f"vth {self.vth} does not fit the threshold register")

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        for name in ("bias_mant", "v0", "unit"):
            a = getattr(self, name)
            if np.broadcast_shapes(a.shape, s) != tuple(s):
                raise self.fail(f"{name} of shape {a.shape} does not broadcast to {s}")
        return tuple(s)

    def bias_int(self) -> np.ndarray:
        """The effective bias added to v (or σ) each step."""
        return self.bias_mant.astype(np.int64) * (1 << self.bias_exp)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        """Rate limit in integer units (mean output per step for a constant input)."""
        if self.mode == "sdnn":
            return loihi2.sdnn_activation(xs[0], self.bias_int())
        return loihi2.spiking_rate(xs[0], self.bias_int(), self.vth)

    def n_params(self) -> int:
        return int(self.bias_mant.size)


@dataclass(frozen=True, eq=False, kw_only=True)
class LoihiReadout(Readout):
    """The host-side readout of the last synapse's integer output I[t] (Lava sink).

    ``accumulate`` ``rate`` (spiking modes): prediction[t] = scale · Σ_{τ≤t} I[τ] / t + bias;
    ``sigma`` (sdnn, whose messages are changes): prediction[t] = scale · Σ_{τ≤t} I[τ] + bias.
    """

    kind: ClassVar[str] = "loihi_readout"
    scale: float = 1.0
    bias: np.ndarray | None = array_field(optional=True)
    accumulate: str = "rate"

    def predict(self, current: np.ndarray) -> np.ndarray:
        """Predictions at every step from the integer currents (T, B, ...)."""
        acc = np.cumsum(current, axis=0, dtype=np.float64)
        if self.accumulate == "rate":
            steps = np.arange(1, len(current) + 1, dtype=np.float64)
            acc = acc / steps.reshape((-1,) + (1,) * (acc.ndim - 1))
        y = acc * self.scale
        if self.bias is not None:
            y = y + self.bias
        return y


__all__ = ["LoihiConv", "LoihiDense", "LoihiInput", "LoihiNeuron", "LoihiReadout", "watch_wraps"]
