"""What a converter sees while the frontend walks the ONNX graph: values, attributes, IR building.

Every ONNX value name maps to one of:

* ``Const`` — known at conversion time (initializers, folded Constant / Shape arithmetic);
* ``Tensor`` — produced by an IR node at run time. A tensor may be a *view* of the IR node's output:
  ``shape`` is what ONNX sees (batch excluded) and ``index`` maps each of its elements to a flat
  position in the producer's output. Reshape / Flatten / Squeeze / Unsqueeze / Transpose only
  change the view; an IR node (Reshape or ChannelPermute) is made when a consumer needs the data.

Permuted views travel: a per-element op (Relu, Clip, an affine map by constants, BatchNorm) on a
permuted view runs on the producer's layout and keeps the view (its constants are permuted the
same way), so ``Conv → Transpose(0,2,3,1) → Relu → Flatten → Gemm`` ends in the Dense weights.
A permutation of a graph input's axes is the input's layout (channels-last exports): it becomes
an IR ``Transpose`` right after the input, and the input keeps the exported layout. Any other
permutation a consumer needs is refused, naming the ONNX node that made it.

The batch axis is symbolic: ``Shape`` reports it as ``BATCH`` so shape arithmetic such as
``Reshape(x, Concat(Shape(x)[0:1], [-1]))`` folds to a target shape whose first entry is ``BATCH``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from onnx2snn.frontend.registry import Unsupported
from onnx2snn.ir.nodes import ChannelPermute, Node, Reshape, Shape, Transpose

BATCH = 2**31 - 1  # stands for the batch size in folded shape arithmetic


@dataclass(frozen=True, eq=False)
class Const:
    """A value known at conversion time."""

    value: np.ndarray


@dataclass(frozen=True, eq=False)
class Tensor:
    """A run-time value: IR node ``node`` (output shape ``base``) seen as ``shape`` through ``index``."""

    node: str
    base: Shape
    shape: Shape
    index: np.ndarray | None = None  # flat positions into ``base``; None = the C-order identity
    cause: tuple[str, str] | None = None  # (op, name) of the ONNX node that permuted the data

    def view(self, shape: Shape, index: np.ndarray | None,
             cause: tuple[str, str] | None = None) -> Tensor:
        """The same data seen with another shape / element order (``cause``: who reordered it)."""
        if index is not None and np.array_equal(index.ravel(), np.arange(index.size)):
            index = None
        return Tensor(self.node, self.base, tuple(int(d) for d in shape), index,
                      None if index is None else (cause or self.cause))

    def on(self, node: str) -> Tensor:
        """The same view of another IR node of the same output shape (a per-element op's result)."""
        return Tensor(node, self.base, self.shape, self.index, self.cause)

    def to_base(self, const: np.ndarray) -> np.ndarray:
        """A constant that broadcasts to this view, laid out as the producer's output.

        The result is squeezed back to (C, 1, ...) or a scalar when it is constant along the other
        axes, so a BatchNorm seen through a permutation still folds into the producer.
        """
        full = np.broadcast_to(np.asarray(const), self.shape)
        out = np.empty(int(np.prod(self.base)), dtype=full.dtype)
        out[self.flat_index().ravel()] = full.ravel()
        base = out.reshape(self.base)
        if np.all(base == base.ravel()[0]):
            return base.ravel()[:1].reshape(())
        first = base.reshape(self.base[0], -1)
        if len(self.base) > 1 and np.all(first == first[:, :1]):
            return first[:, 0].reshape((self.base[0],) + (1,) * (len(self.base) - 1))
        return base

    def flat_index(self) -> np.ndarray:
        """``index`` made explicit: an int array of ``shape``."""
        if self.index is None:
            return np.arange(int(np.prod(self.base)), dtype=np.int64).reshape(self.shape)
        return self.index


Value = Const | Tensor


class Context:
    """State of one conversion: the ONNX values seen so far and the IR nodes made so far."""

    def __init__(self, opset: int, graph_outputs: set[str], declared_batch: int | None):
        self.opset = opset
        self.graph_outputs = graph_outputs
        self.used: set[str] = set(graph_outputs)  # every value some node or the graph reads
        self.declared_batch = declared_batch
        self.values: dict[str, Value] = {}
        self.nodes: list[Node] = []
        self.node_names: set[str] = set()
        self.dropped: list[str] = []
        self.pre_softmax: dict[str, str] = {}  # dropped final softmax: its output -> its input
        self.warnings: list[str] = []
        self._materialized: dict[int, str] = {}
        # IR nodes that hold a graph input as fed (the input, and per-element ops on it): a
        # permutation of their axes is the input's layout, made into an IR Transpose
        self.input_side: set[str] = set()
        self.input_layouts: dict[str, dict[str, Any]] = {}
        self.current: onnx.NodeProto | None = None
        self.current_name = ""

    # -- reading values ----------------------------------------------------------------------
    def has(self, name: str) -> bool:
        """True if the (optional) input ``name`` is given."""
        return bool(name)

    def value(self, name: str) -> Value:
        """The value of ONNX name ``name``."""
        return self.values[name]

    def is_const(self, name: str) -> bool:
        """True if ``name`` is known at conversion time."""
        return isinstance(self.values.get(name), Const)

    def const(self, name: str, what: str) -> np.ndarray:
        """The constant behind ``name``; ``Unsupported`` naming ``what`` if it is computed at run time."""
        v = self.values[name]
        if not isinstance(v, Const):
            raise Unsupported(f"{what} must be a constant (an initializer), not computed at run "
                              "time")
        return v.value

    def tensor_value(self, name: str) -> Tensor:
        """The run-time tensor behind ``name`` (as a view)."""
        v = self.values[name]
        if not isinstance(v, Tensor):
            raise Unsupported("expects a run-time tensor here, got a constant")
        return v

    def tensor(self, name: str) -> str:
        """The IR node holding ``name``'s data in ONNX's element order, making a view node if needed."""
        t = self.tensor_value(name)
        key = id(t)
        if key in self._materialized:
            return self._materialized[key]
        if t.index is None:
            out = t.node if t.shape == t.base else self.add(Reshape, [t.node], shape=t.shape,
                                                          suffix="view")
        else:
            perm = channel_permutation(t)
            axes = axis_permutation(t) if perm is None else None
            if perm is not None:
                out = self.add(ChannelPermute, [t.node], perm=perm, suffix="shuffle")
            elif axes is not None and t.node in self.input_side:
                here = self.current_name
                self.current_name = t.cause[1] if t.cause else here  # named after the Transpose
                try:
                    out = self.add(Transpose, [t.node], perm=axes, suffix="layout")
                finally:
                    self.current_name = here
                self._record_layout(t, axes)
            else:
                where = f"{t.cause[0]} node {t.cause[1]}" if t.cause else "a Reshape/Transpose"
                raise Unsupported(
                    f"{where} moves data across spatial positions before {self.current_name}; "
                    "only a permutation of a graph input (its layout), channel permutations, "
                    "layout no-ops and a permutation that ends in a Flatten before a Gemm/MatMul "
                    "(through per-element ops) are supported: export without this Transpose",
                    cause=t.cause)
        self._materialized[key] = out
        return out

    def _record_layout(self, t: Tensor, axes: tuple[int, ...]) -> None:
        for n in self.nodes:
            if n.name in self.input_side and not n.inputs and n.shape == t.base:
                layout = ("NHWC" if axes == (2, 0, 1) else
                          "N" + "".join("CHWD"[a] if a < 4 else "?" for a in np.argsort(axes)))
                self.input_layouts[n.name] = {"layout": layout, "shape": list(t.base),
                                              "network_shape": list(t.shape),
                                              "perm": list(axes),
                                              "onnx_node": t.cause[1] if t.cause else ""}

    def pointwise_source(self, name: str) -> tuple[str, Tensor | None]:
        """The IR input of a per-element op on ``name``, and the permuted view it keeps, if any.

        For a permuted view the op reads the producer itself (its constants go through
        ``Tensor.to_base``) and ``bind_pointwise`` gives its result the same view, so the
        permutation travels on to where it can be absorbed. Otherwise the view is None.
        """
        t = self.tensor_value(name)
        if t.index is None or id(t) in self._materialized:
            return self.tensor(name), None
        return t.node, t

    def bind_pointwise(self, onnx_name: str, ir_name: str, view: Tensor | None) -> None:
        """Bind a per-element op's result made from ``pointwise_source``.

        A per-element op on a graph input (Keras' Rescaling before the layout Transpose) keeps
        the input's layout: a permutation after it is still the input's layout.
        """
        made = self.nodes[-1] if self.nodes and self.nodes[-1].name == ir_name else None
        if made is not None and made.inputs and made.inputs[0] in self.input_side:
            self.input_side.add(ir_name)
        if view is None:
            self.set_tensor(onnx_name, ir_name)
        else:
            self.set(onnx_name, view.on(ir_name))

    def add_view_flat(self, t: Tensor) -> str:
        """The IR node of ``t``'s producer, flattened to (n,) in C order (for an index into it)."""
        if len(t.base) == 1:
            return t.node
        return self.add(Reshape, [t.node], shape=(int(np.prod(t.base)),), suffix="flat")

    def shape(self, name: str) -> Shape:
        """Per-sample shape of the run-time tensor ``name``."""
        return self.tensor_value(name).shape

    # -- attributes --------------------------------------------------------------------------
    def attr(self, node: onnx.NodeProto, name: str, default: Any = None) -> Any:
        """Attribute ``name`` of ``node``; if absent, the ONNX schema's default, else ``default``."""
        for a in node.attribute:
            if a.name == name:
                value = onnx.helper.get_attribute_value(a)
                if isinstance(value, bytes):
                    return value.decode()
                if isinstance(value, onnx.TensorProto):
                    return numpy_helper.to_array(value)
                return value
        try:
            schema = onnx.defs.get_schema(node.op_type, self.opset, node.domain)
            attr = schema.attributes.get(name)
            if attr is not None and attr.default_value.type != 0:
                value = onnx.helper.get_attribute_value(attr.default_value)
                return value.decode() if isinstance(value, bytes) else value
        except onnx.defs.SchemaError:
            pass
        return default

    # -- building ----------------------------------------------------------------------------
    def add(self, cls: type[Node], inputs: list[str], *, shape: Shape | None = None,
            suffix: str = "", **fields: Any) -> str:
        """Make an IR node of ``cls`` reading IR nodes ``inputs``; returns its name.

        The shape is inferred from the inputs unless given; the node's origin is the ONNX node
        being converted.
        """
        base = self.current_name + (f"/{suffix}" if suffix else "")
        name, k = base, 1
        while name in self.node_names:
            k += 1
            name = f"{base}#{k}"
        in_shapes = [self._node_shape(i) for i in inputs]
        probe = cls(name=name, inputs=tuple(inputs), shape=shape or (0,),
                    origin=(self.current_name,), **fields)
        inferred = probe.infer_shape(in_shapes)
        node = probe if shape is not None and tuple(shape) == tuple(inferred) else probe.replace(
            shape=tuple(inferred))
        self.nodes.append(node)
        self.node_names.add(name)
        return name

    def _node_shape(self, name: str) -> Shape:
        for n in reversed(self.nodes):
            if n.name == name:
                return n.shape
        raise KeyError(name)

    def node_shape(self, ir_name: str) -> Shape:
        """Output shape of an IR node made earlier."""
        return self._node_shape(ir_name)

    def set_tensor(self, onnx_name: str, ir_name: str) -> None:
        """Bind ONNX value ``onnx_name`` to the output of IR node ``ir_name``."""
        s = self._node_shape(ir_name)
        self.values[onnx_name] = Tensor(ir_name, s, s)

    def set(self, onnx_name: str, value: Value) -> None:
        """Bind ONNX value ``onnx_name`` to ``value`` (a Const or a Tensor view)."""
        self.values[onnx_name] = value

    def per_sample(self, const: np.ndarray, shape: Shape, what: str) -> np.ndarray:
        """A constant operand with any leading batch axis of size 1 removed, checked to broadcast."""
        c = np.asarray(const)
        while c.ndim > len(shape):
            if c.shape[0] != 1:
                raise Unsupported(f"{what} of shape {c.shape} varies along the batch axis")
            c = c[0]
        try:
            out = np.broadcast_shapes(c.shape, shape)
        except ValueError:
            raise Unsupported(f"{what} of shape {c.shape} does not broadcast to the tensor "
                              f"shape {shape}") from None
        if out != tuple(shape):
            raise Unsupported(f"{what} of shape {c.shape} would enlarge the tensor {shape}")
        return c


def axis_permutation(t: Tensor) -> tuple[int, ...] | None:
    """If view ``t`` is its producer's output with the axes permuted, the permutation; else None."""
    if t.index is None or len(t.base) > 5:
        return None
    base = np.arange(int(np.prod(t.base)), dtype=np.int64).reshape(t.base)
    for perm in itertools.permutations(range(len(t.base))):
        if tuple(t.base[p] for p in perm) == t.shape and np.array_equal(base.transpose(perm),
                                                                         t.index):
            return tuple(perm)
    return None


def channel_permutation(t: Tensor) -> np.ndarray | None:
    """If view ``t`` only reorders the channels of a (C, ...) producer, the permutation; else None."""
    if t.shape != t.base or len(t.base) < 1:
        return None
    c = t.base[0]
    rest = int(np.prod(t.base[1:]))
    idx = t.flat_index().reshape(c, rest)
    src = idx[:, 0] // rest
    if np.array_equal(idx, src[:, None] * rest + np.arange(rest)[None, :]):
        return src.astype(np.int64)
    return None
