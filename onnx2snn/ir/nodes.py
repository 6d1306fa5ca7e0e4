"""Node types of the intermediate representation (IR) shared by the ANN and SNN graphs.

A node is a frozen dataclass with one output, named by ``name``. ``inputs`` lists the producers of
its input ports, in the order of ``ports`` (a port ending in ``*`` is variadic). ``shape`` is the
static output shape *without* the batch axis, channel first ((C, H, W) or (F,)). Array fields are
stored read-only; nodes compare by identity (``eq=False``) because arrays have no useful ``==``.

Every node kind registers itself by ``kind`` (used by save/load), states its equation in its
docstring, infers its output shape from its input shapes (``infer_shape``), and evaluates itself on
a batch in NumPy (``forward``); ``macs`` counts multiply-accumulates per sample.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from onnx2snn import numerics
from onnx2snn.errors import IRError

Shape = tuple[int, ...]


def array_field(optional: bool = False) -> Any:
    """A dataclass field holding a NumPy array (stored read-only, saved beside the JSON)."""
    if optional:
        return field(default=None, metadata={"array": True})
    return field(metadata={"array": True})


def _readonly(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        return value  # already frozen: safe to share
    arr = np.array(value, copy=True)
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False, kw_only=True)
class Node:
    """Base of all IR nodes: ``name``, ``inputs`` (producer names), static ``shape``, ``origin``.

    ``origin`` names the ONNX nodes this node was made from, so errors and reports can point at
    the user's model.
    """

    kind: ClassVar[str] = ""
    ports: ClassVar[tuple[str, ...]] = ("x",)
    registry: ClassVar[dict[str, type[Node]]] = {}

    name: str
    inputs: tuple[str, ...]
    shape: Shape
    origin: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            if cls.kind in Node.registry:
                raise TypeError(f"two IR node classes claim kind {cls.kind!r}")
            Node.registry[cls.kind] = cls

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "origin", tuple(self.origin))
        for f in dataclasses.fields(self):
            if f.metadata.get("array"):
                object.__setattr__(self, f.name, _readonly(getattr(self, f.name)))
            elif isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        self.check_ports()

    # -- structure ---------------------------------------------------------------------------
    def check_ports(self) -> None:
        """Raise ``IRError`` unless the number of inputs fits ``ports``."""
        variadic = bool(self.ports) and self.ports[-1].endswith("*")
        fixed = len(self.ports) - (1 if variadic else 0)
        n = len(self.inputs)
        if (variadic and n < max(fixed, 1)) or (not variadic and n != fixed):
            raise IRError(f"{self.kind} node {self.name!r} takes ports {self.ports}, got {n} inputs")

    def port_names(self) -> tuple[str, ...]:
        """Names of the ports in input order (a variadic port ``x*`` becomes x0, x1, ...)."""
        if self.ports and self.ports[-1].endswith("*"):
            base = self.ports[-1][:-1]
            fixed = self.ports[:-1]
            return fixed + tuple(f"{base}{i}" for i in range(len(self.inputs) - len(fixed)))
        return self.ports

    def replace(self, **changes: Any) -> Node:
        """A copy with some fields changed (arrays are re-frozen)."""
        return dataclasses.replace(self, **changes)

    def arrays(self) -> dict[str, np.ndarray]:
        """The array fields that are set, by field name."""
        out = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("array") and getattr(self, f.name) is not None:
                out[f.name] = getattr(self, f.name)
        return out

    def attributes(self) -> dict[str, Any]:
        """The non-array fields except the common ones, as JSON-friendly values."""
        skip = {"name", "inputs", "shape", "origin"}
        out = {}
        for f in dataclasses.fields(self):
            if f.name in skip or f.metadata.get("array"):
                continue
            out[f.name] = getattr(self, f.name)
        return out

    # -- semantics ---------------------------------------------------------------------------
    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        """The output shape implied by the input shapes; raises ``IRError`` if they do not fit."""
        raise NotImplementedError

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        """Evaluate on a batch: every array has a leading batch axis."""
        raise NotImplementedError

    def macs(self, in_shapes: list[Shape]) -> int:
        """Multiply-accumulate operations per sample (0 for views and elementwise ops)."""
        return 0

    def n_params(self) -> int:
        """Number of stored parameters (weights and biases)."""
        return int(sum(a.size for a in self.arrays().values()))

    def fail(self, message: str) -> IRError:
        """An ``IRError`` naming this node."""
        where = f" (from ONNX node {', '.join(self.origin)})" if self.origin else ""
        return IRError(f"{self.kind} node {self.name!r}{where}: {message}")


def _pair(v: Any) -> tuple[int, int]:
    t = tuple(int(x) for x in v)
    if len(t) != 2:
        raise IRError(f"expected two values (height, width), got {v!r}")
    return (t[0], t[1])


@dataclass(frozen=True, eq=False, kw_only=True)
class Input(Node):
    """The network input: a tensor of ``shape`` per sample, fed from outside."""

    kind: ClassVar[str] = "input"
    ports: ClassVar[tuple[str, ...]] = ()

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        return self.shape


@dataclass(frozen=True, eq=False, kw_only=True)
class Dense(Node):
    """Fully connected synapses: y = W x + b, with ``weight`` W of shape (out, in)."""

    kind: ClassVar[str] = "dense"
    weight: np.ndarray = array_field()
    bias: np.ndarray | None = array_field(optional=True)

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        if len(s) != 1 or s[0] != self.weight.shape[1]:
            raise self.fail(f"input shape {s} does not fit weight {self.weight.shape}")
        return (self.weight.shape[0],)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        x = xs[0]
        y = x @ self.weight.T.astype(x.dtype, copy=False)
        if self.bias is not None:
            y = y + self.bias.astype(x.dtype, copy=False)
        return y

    def macs(self, in_shapes: list[Shape]) -> int:
        return int(self.weight.size)


@dataclass(frozen=True, eq=False, kw_only=True)
class Conv(Node):
    """2-D grouped convolution (ONNX cross-correlation):

    y[o, i, j] = b[o] + sum_{c,u,v} W[o, c, u, v] x[g(o)*C/G + c, i*s_h + u*d_h - p_t, j*s_w + v*d_w - p_l]

    ``weight`` is (O, C/groups, KH, KW); ``pads`` is (top, left, bottom, right); positions outside
    the input read zero. ``bias`` is per output channel (O,), or per output position (O, OH, OW):
    the Loihi target's composition of a padded convolution with a biased map before it
    (``onnx2snn.compose``) gives the edge positions another bias than the rest.
    """

    kind: ClassVar[str] = "conv"
    weight: np.ndarray = array_field()
    bias: np.ndarray | None = array_field(optional=True)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    groups: int = 1

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        o, cg, kh, kw = self.weight.shape
        if len(s) != 3 or s[0] != cg * self.groups or o % self.groups:
            raise self.fail(f"input shape {s} does not fit weight {self.weight.shape} "
                            f"with {self.groups} group(s)")
        oh = numerics.conv_output_size(s[1], kh, self.strides[0], self.pads[0], self.pads[2],
                                       self.dilations[0])
        ow = numerics.conv_output_size(s[2], kw, self.strides[1], self.pads[1], self.pads[3],
                                       self.dilations[1])
        if oh < 1 or ow < 1:
            raise self.fail(f"the kernel does not fit the input {s}")
        if self.bias is not None and self.bias.size != o and self.bias.shape != (o, oh, ow):
            raise self.fail(f"bias of shape {self.bias.shape} is neither per channel ({o},) nor "
                            f"per output position {(o, oh, ow)}")
        return (o, oh, ow)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        return numerics.conv2d(xs[0], self.weight, self.bias, _pair(self.strides),
                               tuple(self.pads), _pair(self.dilations), self.groups)  # type: ignore[arg-type]

    def macs(self, in_shapes: list[Shape]) -> int:
        o, cg, kh, kw = self.weight.shape
        return int(np.prod(self.shape) * cg * kh * kw)


@dataclass(frozen=True, eq=False, kw_only=True)
class AvgPool(Node):
    """Average pooling: y[c, i, j] = (1/n_ij) sum of x[c] over window (i, j).

    n_ij counts the input cells of the window, plus the padding cells if ``count_include_pad``.
    Global average pooling is the case kernel = (H, W).
    """

    kind: ClassVar[str] = "avgpool"
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    count_include_pad: bool = False
    ceil_mode: bool = False

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        if len(s) != 3:
            raise self.fail(f"needs a (C, H, W) input, got {s}")
        (oh, ow), _ = numerics.pool_geometry(s[1:], self.kernel, self.strides, self.pads, (1, 1),
                                             self.ceil_mode)
        return (s[0], oh, ow)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        return numerics.avg_pool2d(xs[0], _pair(self.kernel), _pair(self.strides),
                                   tuple(self.pads), self.count_include_pad,  # type: ignore[arg-type]
                                   self.ceil_mode)

    def macs(self, in_shapes: list[Shape]) -> int:
        return int(np.prod(self.shape) * self.kernel[0] * self.kernel[1])


@dataclass(frozen=True, eq=False, kw_only=True)
class MaxPool(Node):
    """Max pooling: y[c, i, j] = max of x[c] over window (i, j); padding never wins."""

    kind: ClassVar[str] = "maxpool"
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    ceil_mode: bool = False

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        if len(s) != 3:
            raise self.fail(f"needs a (C, H, W) input, got {s}")
        (oh, ow), _ = numerics.pool_geometry(s[1:], self.kernel, self.strides, self.pads,
                                             self.dilations, self.ceil_mode)
        return (s[0], oh, ow)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        return numerics.max_pool2d(xs[0], _pair(self.kernel), _pair(self.strides),
                                   tuple(self.pads), _pair(self.dilations),  # type: ignore[arg-type]
                                   self.ceil_mode)


@dataclass(frozen=True, eq=False, kw_only=True)
class Affine(Node):
    """Elementwise affine map y = scale * x + shift (a standalone BatchNorm, Mul/Div/Add by constants).

    ``scale`` and ``shift`` broadcast against the per-sample shape (e.g. (C, 1, 1) per channel);
    either may be absent (1 and 0).
    """

    kind: ClassVar[str] = "affine"
    scale: np.ndarray | None = array_field(optional=True)
    shift: np.ndarray | None = array_field(optional=True)

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        for a in (self.scale, self.shift):
            if a is not None and np.broadcast_shapes(a.shape, s) != tuple(s):
                raise self.fail(f"parameter of shape {a.shape} does not broadcast to {s}")
        return tuple(s)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        y = xs[0]
        if self.scale is not None:
            y = y * self.scale.astype(y.dtype, copy=False)
        if self.shift is not None:
            y = y + self.shift.astype(y.dtype, copy=False)
        return y

    def per_channel(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(scale, shift) as two (C,) vectors, or None if they vary along other axes than C."""
        c = self.shape[0]
        out = []
        for a, neutral in ((self.scale, 1.0), (self.shift, 0.0)):
            if a is None:
                out.append(np.full(c, neutral))
                continue
            full = np.broadcast_to(a, self.shape).reshape(c, -1).astype(np.float64)
            if not np.all(full == full[:, :1]):
                return None
            out.append(full[:, 0].copy())
        return out[0], out[1]


@dataclass(frozen=True, eq=False, kw_only=True)
class Add(Node):
    """Elementwise sum of two or more tensors of the same shape (residual connections)."""

    kind: ClassVar[str] = "add"
    ports: ClassVar[tuple[str, ...]] = ("x*",)

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        if len(in_shapes) < 2 or any(s != in_shapes[0] for s in in_shapes):
            raise self.fail(f"needs two or more inputs of one shape, got {in_shapes}")
        return in_shapes[0]

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y


@dataclass(frozen=True, eq=False, kw_only=True)
class Relu(Node):
    """Rectifier y = max(x, 0), or the clipped y = min(max(x, 0), ceiling) when ``ceiling`` is set.

    The ceiling (ONNX ``Clip(0, λ)``, ReLU6) is the activation's known maximum: conversion uses it
    as the layer's scale λ.
    """

    kind: ClassVar[str] = "relu"
    ceiling: float | None = None

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        return in_shapes[0]

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        y = np.maximum(xs[0], 0)
        if self.ceiling is not None:
            y = np.minimum(y, self.ceiling)
        return y


@dataclass(frozen=True, eq=False, kw_only=True)
class LeakyRelu(Node):
    """Leaky rectifier y = x where x ≥ 0, y = α·x where x < 0 (ONNX LeakyRelu; PRelu).

    ``alpha`` holds α per channel, shaped to broadcast against the tensor: (C, 1, 1) for a
    (C, H, W) tensor, (F,) for a vector. Any finite α is allowed (α < 0 or α > 1 too). Spiking
    neurons send no negative spikes, so conversion splits the node into two ReLU populations,
    y = ReLU(x) − α·ReLU(−x) (``onnx2snn.convert.signed``); it never reaches an SNN graph.
    """

    kind: ClassVar[str] = "leaky_relu"
    alpha: np.ndarray = array_field()

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        if np.broadcast_shapes(self.alpha.shape, s) != tuple(s):
            raise self.fail(f"alpha of shape {self.alpha.shape} does not broadcast to {s}")
        return tuple(s)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        x = xs[0]
        return np.where(x >= 0, x, x * self.alpha.astype(x.dtype, copy=False))

    def channel_alpha(self) -> np.ndarray:
        """α as a (C,) vector (one value per channel, or per element of a vector)."""
        return np.broadcast_to(self.alpha, self.shape).reshape(self.shape[0], -1)[:, 0].copy()


@dataclass(frozen=True, eq=False, kw_only=True)
class Reshape(Node):
    """A view: the same elements in C order, with per-sample shape ``shape`` (Flatten, Reshape)."""

    kind: ClassVar[str] = "reshape"

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        if int(np.prod(s)) != int(np.prod(self.shape)):
            raise self.fail(f"cannot view {s} as {self.shape}")
        return self.shape

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        return xs[0].reshape((xs[0].shape[0],) + self.shape)


@dataclass(frozen=True, eq=False, kw_only=True)
class Concat(Node):
    """Concatenation of the inputs along per-sample ``axis`` (0 = channels)."""

    kind: ClassVar[str] = "concat"
    ports: ClassVar[tuple[str, ...]] = ("x*",)
    axis: int = 0

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        ref = list(in_shapes[0])
        if not 0 <= self.axis < len(ref):
            raise self.fail(f"axis {self.axis} out of range for {tuple(ref)}")
        total = 0
        for s in in_shapes:
            if len(s) != len(ref) or any(a != b for i, (a, b) in enumerate(zip(s, ref))
                                         if i != self.axis):
                raise self.fail(f"inputs {in_shapes} differ outside axis {self.axis}")
            total += s[self.axis]
        ref[self.axis] = total
        return tuple(ref)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        return np.concatenate(xs, axis=self.axis + 1)


@dataclass(frozen=True, eq=False, kw_only=True)
class ChannelPermute(Node):
    """A view that reorders channels: y[c] = x[perm[c]] (ShuffleNet's channel shuffle)."""

    kind: ClassVar[str] = "channel_permute"
    perm: np.ndarray = array_field()

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        if sorted(self.perm.tolist()) != list(range(s[0])):
            raise self.fail(f"perm is not a permutation of {s[0]} channels")
        return s

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        return xs[0][:, self.perm]

    def n_params(self) -> int:
        return 0


@dataclass(frozen=True, eq=False, kw_only=True)
class Transpose(Node):
    """A view that permutes the per-sample axes: y = x.transpose(perm) (the batch axis stays first).

    The frontend makes it only for the layout of a graph input: a model exported channels-last
    (Keras, JAX: NHWC data, ``Transpose(perm=[0, 3, 1, 2])`` after the input) keeps its input in
    that layout, so the user's data stays as exported, and this node hands the network (C, H, W).
    ``perm`` indexes the per-sample axes ((2, 0, 1) for NHWC -> NCHW).
    """

    kind: ClassVar[str] = "transpose"
    perm: tuple[int, ...] = ()

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        if sorted(self.perm) != list(range(len(s))):
            raise self.fail(f"perm {self.perm} is not a permutation of the axes of {s}")
        return tuple(s[p] for p in self.perm)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(xs[0].transpose((0,) + tuple(p + 1 for p in self.perm)))


@dataclass(frozen=True, eq=False, kw_only=True)
class Pad(Node):
    """Zero padding of the two spatial axes by ``pads`` = (top, left, bottom, right)."""

    kind: ClassVar[str] = "pad"
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def infer_shape(self, in_shapes: list[Shape]) -> Shape:
        (s,) = in_shapes
        if len(s) != 3:
            raise self.fail(f"needs a (C, H, W) input, got {s}")
        t, left, b, r = self.pads
        return (s[0], s[1] + t + b, s[2] + left + r)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        return numerics.pad2d(xs[0], tuple(self.pads))  # type: ignore[arg-type]
