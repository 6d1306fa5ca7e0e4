"""Every converter against onnxruntime: a table of small ONNX models written with ``onnx.helper``.

Each case builds a model with a dynamic batch axis, converts it, runs the NumPy executor (float64)
and onnxruntime (float32) on a batch of 3 and asks for max relative error <= 1e-5. A coverage test
fails when a registered converter is exercised by no case. Refusals are checked at the end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2snn.errors import UnsupportedModelError
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.frontend.registry import CONVERTERS, load_all
from onnx2snn.ir import nodes as ir

BATCH = 3
TOL = 1e-5


# -- building models -----------------------------------------------------------------------------
class B:
    """A tiny model builder: ``b.init(array)`` names constants, ``b.node(...)`` adds nodes."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.k = 0

    def name(self, prefix: str) -> str:
        self.k += 1
        return f"{prefix}{self.k}"

    def init(self, value: Any, dtype: Any = np.float32) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def rand(self, *shape: int, lo: float = -1.0, hi: float = 1.0) -> str:
        return self.init(self.rng.uniform(lo, hi, shape))

    def node(self, op: str, inputs: list[str], n_out: int = 1, name: str | None = None,
             **attrs: Any) -> Any:
        outs = [self.name("t") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name or self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, x_shape: tuple[int, ...], out: str | list[str], opset: int = 17
              ) -> onnx.ModelProto:
        outs = [out] if isinstance(out, str) else out
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])
        ys = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
        graph = helper.make_graph(self.nodes, "case", [x], ys, initializer=self.inits)
        ops = [helper.make_opsetid("", opset)]
        m = helper.make_model(graph, opset_imports=ops)
        m.ir_version = helper.find_min_ir_version_for(ops)
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
        self._fill_output_shapes(m, x_shape)
        onnx.checker.check_model(m, full_check=True)
        return m

    @staticmethod
    def _fill_output_shapes(m: onnx.ModelProto, x_shape: tuple[int, ...]) -> None:
        """The checker wants output shapes; where inference cannot tell, ask onnxruntime."""
        missing = [o for o in m.graph.output if not o.type.tensor_type.HasField("shape")]
        if not missing:
            return
        import onnxruntime as ort

        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        outs = sess.run(None, {"x": np.zeros((1, *x_shape), np.float32)})
        for o, y in zip(m.graph.output, outs):
            if o in missing:
                o.CopyFrom(helper.make_tensor_value_info(o.name, TensorProto.FLOAT,
                                                         ["N", *y.shape[1:]]))


def conv(b: B, x: str, cin: int, cout: int, k: int = 3, bias: bool = True, groups: int = 1,
         **attrs: Any) -> str:
    w = b.rand(cout, cin // groups, k, k)
    inputs = [x, w] + ([b.rand(cout)] if bias else [])
    return b.node("Conv", inputs, group=groups, **attrs)


def softmax(y: np.ndarray) -> np.ndarray:
    e = np.exp(y - y.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(y: np.ndarray) -> np.ndarray:
    return np.log(softmax(y))


@dataclasses.dataclass
class Case:
    """A model, its per-sample input shape, and what to check beyond matching onnxruntime."""

    model: onnx.ModelProto
    x_shape: tuple[int, ...]
    post: Callable[[np.ndarray], np.ndarray] | None = None
    expect: Callable[[Any], None] | None = None  # called with the ANN graph
    x_range: tuple[float, float] = (-1.0, 1.0)


def kinds(graph: Any) -> list[str]:
    return [n.kind for n in graph.nodes]


def has_no(*k: str) -> Callable[[Any], None]:
    def check(graph: Any) -> None:
        found = [n.name for n in graph.nodes if n.kind in k]
        assert not found, f"expected no {k} nodes, found {found}"
    return check


def has(*k: str) -> Callable[[Any], None]:
    def check(graph: Any) -> None:
        for kind in k:
            assert kind in kinds(graph), f"expected a {kind} node in {kinds(graph)}"
    return check


def both(*checks: Callable[[Any], None]) -> Callable[[Any], None]:
    def check(graph: Any) -> None:
        for c in checks:
            c(graph)
    return check


# -- the cases -----------------------------------------------------------------------------------
CASES: dict[str, Callable[[], Case]] = {}


def case(fn: Callable[[], Case]) -> Callable[[], Case]:
    CASES[fn.__name__] = fn
    return fn


@case
def conv_basic() -> Case:
    b = B()
    return Case(b.model((3, 8, 8), conv(b, "x", 3, 4, pads=[1, 1, 1, 1])), (3, 8, 8))


@case
def conv_groups() -> Case:
    b = B()
    return Case(b.model((4, 7, 7), conv(b, "x", 4, 6, groups=2)), (4, 7, 7),
                expect=lambda g: _conv(g).groups == 2)


@case
def conv_depthwise() -> Case:
    b = B()
    return Case(b.model((5, 6, 6), conv(b, "x", 5, 5, groups=5, pads=[1, 1, 1, 1])), (5, 6, 6))


@case
def conv_strides_dilations_asymmetric_pads() -> Case:
    b = B()
    y = conv(b, "x", 2, 3, k=3, strides=[2, 1], dilations=[2, 2], pads=[0, 1, 2, 1])
    return Case(b.model((2, 11, 9), y), (2, 11, 9))


@case
def conv_1x1_no_bias() -> Case:
    b = B()
    return Case(b.model((3, 4, 5), conv(b, "x", 3, 2, k=1, bias=False)), (3, 4, 5))


def _auto_pad(mode: str, size: tuple[int, int], stride: int, k: int) -> Case:
    b = B()
    y = conv(b, "x", 2, 3, k=k, auto_pad=mode, strides=[stride, stride])
    return Case(b.model((2, *size), y), (2, *size))


for _mode in ("SAME_UPPER", "SAME_LOWER", "VALID"):
    for _size, _stride, _k in (((8, 7), 2, 3), ((6, 6), 1, 4)):
        CASES[f"conv_auto_pad_{_mode}_{_size[0]}x{_size[1]}_s{_stride}_k{_k}"] = (
            lambda m=_mode, s=_size, st=_stride, k=_k: _auto_pad(m, s, st, k))


def _conv(graph: Any) -> ir.Conv:
    return next(n for n in graph.nodes if isinstance(n, ir.Conv))


@case
def gemm_transB_alpha_beta() -> Case:
    b = B()
    y = b.node("Gemm", ["x", b.rand(5, 6), b.rand(5)], transB=1, alpha=0.5, beta=2.0)
    return Case(b.model((6,), y), (6,))


@case
def gemm_no_transB_row_bias() -> Case:
    b = B()
    y = b.node("Gemm", ["x", b.rand(6, 4), b.rand(1, 4)], alpha=1.5)
    return Case(b.model((6,), y), (6,))


@case
def gemm_scalar_bias_opset9() -> Case:
    b = B()
    y = b.node("Gemm", ["x", b.rand(4, 6), b.init(0.25)], transB=1, beta=0.5)
    return Case(b.model((6,), y, opset=9), (6,))


@case
def gemm_no_bias() -> Case:
    b = B()
    y = b.node("Gemm", ["x", b.rand(4, 6)], transB=1)
    return Case(b.model((6,), y, opset=13), (6,), expect=lambda g: g.nodes[-1].bias is None)


@case
def matmul_add_bias() -> Case:
    b = B()
    h = b.node("MatMul", ["x", b.rand(6, 4)])
    y = b.node("Add", [h, b.rand(4)])
    return Case(b.model((6,), y), (6,), expect=both(has_no("affine"),
                                                     lambda g: len(g.nodes) == 2))


@case
def matmul_after_flatten_of_conv() -> Case:
    b = B()
    c = b.node("Relu", [conv(b, "x", 2, 3)])
    f = b.node("Flatten", [c], axis=1)
    y = b.node("Add", [b.rand(5), b.node("MatMul", [f, b.rand(3 * 4 * 4, 5)])])
    return Case(b.model((2, 6, 6), y), (2, 6, 6))


@case
def add_residual_and_channel_bias() -> Case:
    b = B()
    c1 = b.node("Relu", [conv(b, "x", 3, 3, pads=[1, 1, 1, 1])])
    c2 = conv(b, c1, 3, 3, pads=[1, 1, 1, 1])
    s = b.node("Add", [c2, c1])
    y = b.node("Add", [s, b.rand(3, 1, 1)])
    return Case(b.model((3, 5, 5), y), (3, 5, 5), expect=has("add"))


@case
def add_bias_per_element_with_batch_axis() -> Case:
    b = B()
    y = b.node("Add", [b.rand(1, 2, 3, 3), "x"])
    return Case(b.model((2, 3, 3), y), (2, 3, 3))


@case
def sub_variants() -> Case:
    b = B()
    a = b.node("Sub", ["x", b.rand(2, 1, 1)])        # x - c
    c = b.node("Sub", [b.rand(1), "x"])              # c - x
    d = b.node("Sub", [a, c])                        # x - y
    return Case(b.model((2, 3, 3), d), (2, 3, 3))


@case
def sum_three_tensors_and_constant() -> Case:
    b = B()
    r = b.node("Relu", ["x"])
    s = b.node("Sum", ["x", r, conv(b, "x", 2, 2, k=1)])
    y = b.node("Sum", [s, b.rand(2, 1, 1)])
    return Case(b.model((2, 3, 3), y), (2, 3, 3), expect=has("add"))


@case
def sum_single_operand_opset9() -> Case:
    b = B()
    y = b.node("Relu", [b.node("Sum", [conv(b, "x", 2, 2, k=1)])])
    return Case(b.model((2, 3, 3), y, opset=9), (2, 3, 3))


@case
def mul_div_constants() -> Case:
    b = B()
    m1 = b.node("Mul", ["x", b.init(2.5)])                              # scalar
    m2 = b.node("Mul", [b.rand(1, 3, 1, 1), m1])                        # per channel, left
    d1 = b.node("Div", [m2, b.rand(3, 1, 1, lo=0.5, hi=2.0)])           # per channel
    d2 = b.node("Mul", [d1, b.rand(3, 4, 4)])                           # per element
    y = b.node("Relu", [d2])
    return Case(b.model((3, 4, 4), y), (3, 4, 4))


@case
def mul_after_conv_is_folded() -> Case:
    b = B()
    y = b.node("Mul", [conv(b, "x", 2, 3), b.rand(1, 3, 1, 1)])
    return Case(b.model((2, 5, 5), y), (2, 5, 5), expect=has_no("affine"))


@case
def relu() -> Case:
    b = B()
    return Case(b.model((7,), b.node("Relu", ["x"]), opset=9), (7,))


@case
def clip_relu6_opset9_attributes() -> Case:
    b = B()
    y = b.node("Clip", [conv(b, "x", 2, 2)], min=0.0, max=6.0)
    return Case(b.model((2, 5, 5), y, opset=9), (2, 5, 5), x_range=(-4, 4),
                expect=lambda g: _relu(g).ceiling == 6.0)


@case
def clip_opset13_inputs() -> Case:
    b = B()
    y = b.node("Clip", ["x", b.init(0.0), b.init(0.75)])
    return Case(b.model((2, 5, 5), y, opset=13), (2, 5, 5),
                expect=lambda g: _relu(g).ceiling == 0.75)


@case
def clip_opset13_min_only() -> Case:
    b = B()
    y = b.node("Clip", ["x", b.init(0.0)])
    return Case(b.model((6,), y, opset=13), (6,), expect=lambda g: _relu(g).ceiling is None)


@case
def leaky_relu_default_alpha_opset9() -> Case:
    b = B()
    y = b.node("LeakyRelu", [conv(b, "x", 2, 3)])
    return Case(b.model((2, 5, 5), y, opset=9), (2, 5, 5),
                expect=lambda g: np.allclose(_leaky(g).alpha, 0.01)
                and _leaky(g).alpha.shape == (3, 1, 1))


@case
def prelu_per_channel_slope_with_batch_axis() -> Case:
    b = B()
    slope = b.rand(1, 3, 1, 1, lo=-0.5, hi=1.5)
    y = b.node("PRelu", [conv(b, "x", 2, 3), slope])
    return Case(b.model((2, 5, 5), y, opset=16), (2, 5, 5),
                expect=lambda g: _leaky(g).alpha.shape == (3, 1, 1))


@case
def prelu_scalar_slope_on_vector() -> Case:
    b = B()
    y = b.node("PRelu", ["x", b.init([0.2])])
    return Case(b.model((6,), y, opset=9), (6,),
                expect=lambda g: np.allclose(_leaky(g).alpha, 0.2))


def _leaky(graph: Any) -> ir.LeakyRelu:
    return next(n for n in graph.nodes if isinstance(n, ir.LeakyRelu))


def _relu(graph: Any) -> ir.Relu:
    return next(n for n in graph.nodes if isinstance(n, ir.Relu))


def _bn(b: B, x: str, c: int, **attrs: Any) -> str:
    return b.node("BatchNormalization", [x, b.rand(c, lo=0.5, hi=1.5), b.rand(c),
                                         b.rand(c), b.rand(c, lo=0.5, hi=2.0)], **attrs)


@case
def batchnorm_folded_into_conv() -> Case:
    b = B()
    y = b.node("Relu", [_bn(b, conv(b, "x", 3, 4), 4, epsilon=1e-3)])
    return Case(b.model((3, 6, 6), y), (3, 6, 6), expect=has_no("affine"))


@case
def batchnorm_standalone_after_concat() -> Case:
    b = B()
    c = b.node("Concat", [conv(b, "x", 2, 2, k=1), conv(b, "x", 2, 3, k=1)], axis=1)
    y = _bn(b, c, 5)
    return Case(b.model((2, 4, 4), y), (2, 4, 4), expect=has("affine", "concat"))


@case
def batchnorm_opset9() -> Case:
    b = B()
    return Case(b.model((3, 4, 4), _bn(b, conv(b, "x", 3, 3), 3), opset=9), (3, 4, 4))


@case
def maxpool_basic() -> Case:
    b = B()
    y = b.node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])
    return Case(b.model((2, 6, 6), y, opset=9), (2, 6, 6))


@case
def maxpool_pads_ceil_dilations() -> Case:
    b = B()
    y = b.node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1],
               ceil_mode=1, dilations=[2, 1])
    return Case(b.model((2, 9, 8), y, opset=12), (2, 9, 8))


@case
def maxpool_same_upper() -> Case:
    b = B()
    y = b.node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
    return Case(b.model((2, 7, 6), y), (2, 7, 6))


@case
def averagepool_basic() -> Case:
    b = B()
    y = b.node("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2])
    return Case(b.model((2, 6, 6), y, opset=9), (2, 6, 6))


@case
def averagepool_pads_count_include_pad() -> Case:
    b = B()
    y = b.node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
               count_include_pad=1)
    return Case(b.model((2, 7, 7), y), (2, 7, 7))


@case
def averagepool_pads_exclude_pad() -> Case:
    b = B()
    y = b.node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    return Case(b.model((2, 7, 7), y), (2, 7, 7))


@case
def averagepool_ceil_mode() -> Case:
    b = B()
    y = b.node("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    return Case(b.model((2, 7, 5), y, opset=10), (2, 7, 5))


@case
def global_average_pool_then_flatten_gemm() -> Case:
    b = B()
    g = b.node("GlobalAveragePool", [conv(b, "x", 2, 4)])
    y = b.node("Gemm", [b.node("Flatten", [g]), b.rand(3, 4)], transB=1)
    return Case(b.model((2, 6, 5), y), (2, 6, 5))


@case
def reduce_mean_spatial_keepdims_then_flatten_opset17() -> Case:
    """PyTorch dynamo's AdaptiveAvgPool2d(1): ReduceMean over (2, 3) with axes as an attribute."""
    b = B()
    g = b.node("ReduceMean", [conv(b, "x", 2, 4)], axes=[-2, -1], keepdims=1)
    y = b.node("Gemm", [b.node("Flatten", [g]), b.rand(3, 4)], transB=1)
    return Case(b.model((2, 6, 5), y), (2, 6, 5))


@case
def reduce_mean_spatial_no_keepdims_opset18() -> Case:
    b = B()
    g = b.node("ReduceMean", [conv(b, "x", 2, 4), b.init([2, 3], np.int64)], keepdims=0)
    y = b.node("Gemm", [g, b.rand(3, 4)], transB=1)
    return Case(b.model((2, 6, 5), y, opset=18), (2, 6, 5))


@case
def global_max_pool() -> Case:
    b = B()
    return Case(b.model((3, 5, 4), b.node("GlobalMaxPool", ["x"])), (3, 5, 4))


@case
def flatten_opset9_into_gemm() -> Case:
    b = B()
    f = b.node("Flatten", [b.node("Relu", [conv(b, "x", 2, 3)])])
    y = b.node("Gemm", [f, b.rand(4, 3 * 3 * 3), b.rand(4)], transB=1)
    return Case(b.model((2, 5, 5), y, opset=9), (2, 5, 5))


@case
def flatten_output() -> Case:
    b = B()
    return Case(b.model((2, 3, 3), b.node("Flatten", [conv(b, "x", 2, 2, k=1)], axis=1)),
                (2, 3, 3))


@case
def reshape_shape_gather_unsqueeze_concat_chain() -> Case:
    """torch's x.view(x.size(0), -1) in old exports: the target shape is computed from Shape."""
    b = B()
    c = b.node("Relu", [conv(b, "x", 2, 3)])
    shape = b.node("Shape", [c])
    n = b.node("Gather", [shape, b.init(0, np.int64)], axis=0)
    n1 = b.node("Unsqueeze", [n], axes=[0])
    target = b.node("Concat", [n1, b.init([-1], np.int64)], axis=0)
    f = b.node("Reshape", [c, target])
    y = b.node("Gemm", [f, b.rand(4, 27)], transB=1)
    return Case(b.model((2, 5, 5), y, opset=11), (2, 5, 5))


@case
def reshape_zero_and_minus_one() -> Case:
    b = B()
    r = b.node("Reshape", [conv(b, "x", 2, 4), b.init([0, 2, -1, 3], np.int64)])
    y = b.node("Reshape", [b.node("Relu", [r]), b.init([-1, 4, 3, 3], np.int64)])
    return Case(b.model((2, 5, 5), conv(b, y, 4, 2, k=1), opset=14), (2, 5, 5))


@case
def concat_branches() -> Case:
    b = B()
    a = b.node("Relu", [conv(b, "x", 3, 2, pads=[1, 1, 1, 1])])
    p = b.node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    y = b.node("Concat", [a, p, conv(b, "x", 3, 1, k=1)], axis=-3)
    return Case(b.model((3, 5, 5), y, opset=11), (3, 5, 5), expect=has("concat"))


@case
def pad_folded_into_conv_opset11() -> Case:
    b = B()
    p = b.node("Pad", ["x", b.init([0, 0, 1, 2, 0, 0, 2, 1], np.int64)])
    return Case(b.model((2, 5, 5), conv(b, p, 2, 3), opset=11), (2, 5, 5),
                expect=both(has_no("pad"), lambda g: _conv(g).pads == (1, 2, 2, 1)))


@case
def pad_folded_into_averagepool_opset9() -> Case:
    b = B()
    p = b.node("Pad", ["x"], pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="constant")
    y = b.node("AveragePool", [p], kernel_shape=[3, 3], strides=[2, 2])
    return Case(b.model((2, 6, 6), y, opset=9), (2, 6, 6), expect=has_no("pad"))


@case
def pad_with_axes_opset18_before_maxpool() -> Case:
    b = B()
    p = b.node("Pad", [b.node("Relu", ["x"]), b.init([1, 1, 0, 2], np.int64), b.init(0.0),
                       b.init([2, 3], np.int64)])
    y = b.node("MaxPool", [p], kernel_shape=[2, 2], strides=[2, 2])
    return Case(b.model((2, 5, 5), y, opset=18), (2, 5, 5), expect=has("pad"))


def _squeeze_case(opset: int) -> Case:
    b = B()
    g = b.node("GlobalAveragePool", [conv(b, "x", 2, 4)])
    if opset < 13:
        s = b.node("Squeeze", [g], axes=[2, 3])
    else:
        s = b.node("Squeeze", [g, b.init([-1, -2], np.int64)])
    d = b.node("Relu", [b.node("Gemm", [s, b.rand(6, 4), b.rand(6)], transB=1)])
    if opset < 13:
        u = b.node("Unsqueeze", [d], axes=[2, 3])
    else:
        u = b.node("Unsqueeze", [d, b.init([2, -1], np.int64)])
    return Case(b.model((2, 5, 5), conv(b, u, 6, 3, k=1), opset=opset), (2, 5, 5))


@case
def squeeze_unsqueeze_opset11() -> Case:
    return _squeeze_case(11)


@case
def squeeze_unsqueeze_opset13() -> Case:
    return _squeeze_case(13)


@case
def squeeze_no_axes() -> Case:
    b = B()
    g = b.node("GlobalMaxPool", ["x"])
    return Case(b.model((3, 4, 4), b.node("Squeeze", [g]), opset=13), (3, 4, 4))


@case
def transpose_layout_noop() -> Case:
    """(N, C, 1, 1) -> (N, 1, 1, C) moves no data: the flattened order is unchanged."""
    b = B()
    g = b.node("GlobalAveragePool", [conv(b, "x", 2, 4)])
    t = b.node("Transpose", [g], perm=[0, 2, 3, 1])
    y = b.node("Gemm", [b.node("Flatten", [t]), b.rand(3, 4)], transB=1)
    return Case(b.model((2, 4, 4), y), (2, 4, 4),
                expect=has_no("channel_permute"))


@case
def shufflenet_channel_shuffle() -> Case:
    b = B()
    c = b.node("Relu", [conv(b, "x", 3, 6, k=1)])
    r = b.node("Reshape", [c, b.init([0, 2, 3, 4, 4], np.int64)])
    t = b.node("Transpose", [r], perm=[0, 2, 1, 3, 4])
    s = b.node("Reshape", [t, b.init([0, -1, 4, 4], np.int64)])
    y = conv(b, s, 6, 6, k=3, groups=2, pads=[1, 1, 1, 1])
    return Case(b.model((3, 4, 4), y, opset=13), (3, 4, 4), expect=has("channel_permute"))


@case
def transpose_before_flatten_nhwc_gemm() -> Case:
    """Keras-style NHWC flatten: the permutation is absorbed into the Dense weight columns."""
    b = B()
    c = b.node("Relu", [conv(b, "x", 2, 3)])
    t = b.node("Transpose", [c], perm=[0, 2, 3, 1])
    y = b.node("Gemm", [b.node("Flatten", [t]), b.rand(27, 5), b.rand(5)])
    return Case(b.model((2, 5, 5), y), (2, 5, 5), expect=has_no("channel_permute"))


@case
def identity_dropout_cast() -> Case:
    b = B()
    i = b.node("Identity", ["x"])
    d = b.node("Dropout", [i], ratio=0.5)
    c = b.node("Cast", [d], to=TensorProto.FLOAT)
    return Case(b.model((4,), b.node("Relu", [c]), opset=9), (4,))


@case
def dropout_opset13_with_ratio_and_mask() -> Case:
    b = B()
    d, _mask = b.node("Dropout", [conv(b, "x", 2, 2), b.init(0.3)], n_out=2)
    return Case(b.model((2, 4, 4), d, opset=13), (2, 4, 4))


@case
def terminal_softmax_dropped() -> Case:
    b = B()
    y = b.node("Softmax", [b.node("Gemm", ["x", b.rand(5, 6)], transB=1)], axis=1)
    return Case(b.model((6,), y, opset=13), (6,), post=softmax,
                expect=lambda g: len(g.meta["dropped"]) == 1)


@case
def terminal_log_softmax_dropped_opset9() -> Case:
    b = B()
    y = b.node("LogSoftmax", [b.node("Gemm", ["x", b.rand(5, 6), b.rand(5)], transB=1)])
    return Case(b.model((6,), y, opset=9), (6,), post=log_softmax,
                expect=lambda g: "LogSoftmax" in g.meta["dropped"][0])


@case
def constant_and_constant_of_shape_folding() -> Case:
    b = B()
    w = b.node("Constant", [], value=numpy_helper.from_array(
        b.rng.uniform(-1, 1, (3, 2, 3, 3)).astype(np.float32), "w"))
    zeros = b.node("ConstantOfShape", [b.init([3], np.int64)],
                   value=numpy_helper.from_array(np.array([0.5], np.float32), "v"))
    bias = b.node("Mul", [zeros, b.node("Constant", [], value_float=2.0)])
    y = b.node("Conv", ["x", w, bias])
    return Case(b.model((2, 5, 5), y, opset=13), (2, 5, 5),
                expect=lambda g: np.allclose(_conv(g).bias, 1.0))


@case
def digits_style_mlp_opset17() -> Case:
    b = B()
    f = b.node("Flatten", ["x"])
    h = b.node("Relu", [b.node("Gemm", [f, b.rand(16, 64), b.rand(16)], transB=1)])
    y = b.node("Gemm", [h, b.rand(10, 16), b.rand(10)], transB=1)
    return Case(b.model((1, 8, 8), y), (1, 8, 8))


# -- the tests -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_case_matches_onnxruntime(name: str, ann_vs_ort: Any) -> None:
    c = CASES[name]()
    x = np.random.default_rng(1).uniform(*c.x_range, (BATCH, *c.x_shape)).astype(np.float32)
    graph = ann_vs_ort(c.model, x, tol=TOL, post=c.post)
    if c.expect is not None:
        result = c.expect(graph)
        assert result is None or result, f"expectation failed on graph {kinds(graph)}"


def test_every_converter_is_exercised_by_a_case(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a converter without a case above makes this test fail."""
    registry = load_all()
    called: set[str] = set()
    for op, conv_ in list(registry.items()):
        def wrapped(ctx: Any, node: Any, _fn: Any = conv_.fn, _op: str = op) -> None:
            called.add(_op)
            _fn(ctx, node)
        monkeypatch.setitem(CONVERTERS, op, dataclasses.replace(conv_, fn=wrapped))
    for name in sorted(CASES):
        onnx_to_ann(CASES[name]().model)
    missing = sorted(set(registry) - called)
    assert not missing, f"converters with no test case in {__name__}: {missing}"


# -- refusals ------------------------------------------------------------------------------------
def _refused_model(names: bool) -> onnx.ModelProto:
    """One model with six kinds of unsupported node; ``names=False`` leaves them unnamed."""
    b = B()

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = b.node(op, inputs, **attrs)
        b.nodes[-1].name = name if names else ""
        return out

    c = conv(b, "x", 2, 4, pads=[1, 1, 1, 1])
    b.nodes[-1].name = "conv" if names else ""
    s = node("Sigmoid", [c], "sig")
    t = node("Tanh", [s], "tanh")
    lrn = node("LRN", [t], "lrn", size=3)
    sm = node("Softmax", [lrn], "mid_softmax", axis=1)
    m = node("Mul", [sm, c], "mul2")
    lk = node("Elu", [m], "elu", alpha=0.1)
    lk2 = node("Elu", [lk], "elu2", alpha=0.1)
    return b.model((2, 4, 4), lk2, opset=13)


EXPECTED_REFUSED = ["Elu", "Elu", "LRN", "Mul", "Sigmoid", "Softmax", "Tanh"]


def test_refusals_listed_at_once_sorted_with_node_names() -> None:
    with pytest.raises(UnsupportedModelError) as info:
        onnx_to_ann(_refused_model(names=True))
    problems = info.value.problems
    assert [p[0] for p in problems] == EXPECTED_REFUSED
    assert problems == sorted(problems)
    assert {p[1] for p in problems} == {"sig", "tanh", "lrn", "mid_softmax", "mul2", "elu",
                                        "elu2"}
    message = str(info.value)
    assert message.startswith("cannot convert 7 node(s):")
    for name in ("sig", "tanh", "lrn", "mid_softmax", "mul2", "elu, elu2"):
        assert name in message
    assert "retrain with ReLU" in message and "--drop LRN" in message
    assert "Softmax inside the network" in message and "multiply spike trains" in message
    # what converted before the first problem is still there, for inspect
    assert [n.kind for n in info.value.partial_graph] == ["input", "conv"]


def test_unnamed_nodes_get_stable_generated_names() -> None:
    names = []
    for _ in range(2):
        with pytest.raises(UnsupportedModelError) as info:
            onnx_to_ann(_refused_model(names=False))
        names.append([p[1] for p in info.value.problems])
    assert names[0] == names[1]
    # <op>_<position in the ONNX graph>
    assert names[0] == ["Elu_6", "Elu_7", "LRN_3", "Mul_5", "Sigmoid_1",
                        "Softmax_4", "Tanh_2"]


def test_drop_ops_removes_lrn_with_a_warning(ann_vs_ort: Any) -> None:
    b = B()
    y = b.node("LRN", [b.node("Relu", [conv(b, "x", 2, 3)])], size=3)
    model = b.model((2, 5, 5), y, opset=13)
    x = np.random.default_rng(0).uniform(-1, 1, (BATCH, 2, 5, 5)).astype(np.float32)
    with pytest.raises(UnsupportedModelError):
        onnx_to_ann(model)
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    plain.graph.node[-1].op_type = "Identity"
    del plain.graph.node[-1].attribute[:]
    with pytest.warns(UserWarning, match="dropped LRN node"):
        graph = onnx_to_ann(model, drop_ops=["LRN"])
    assert any("LRN" in a for a in graph.meta["approximations"])
    assert ann_vs_ort(plain, x, tol=TOL) is not None


REFUSED_SINGLE = {
    "gemm_transA": lambda b: b.node("Gemm", ["x", b.rand(6, 4)], transA=1),
    "clip_min_not_zero": lambda b: b.node("Clip", ["x", b.init(-1.0), b.init(1.0)]),
    "div_constant_by_tensor": lambda b: b.node("Div", [b.init(1.0), "x"]),
    "flatten_axis_2": lambda b: b.node("Flatten", ["x"], axis=2),
    "pad_reflect": lambda b: b.node("Pad", ["x", b.init([0, 0, 1, 1, 0, 0, 1, 1], np.int64)],
                                    mode="reflect"),
    "transpose_moves_batch": lambda b: b.node("Transpose", ["x"], perm=[1, 0, 2, 3]),
    # a permutation of the graph input is its layout (accepted); inside the network it is not
    "spatial_transpose_to_conv": lambda b: conv(b, b.node("Transpose", [conv(b, "x", 6, 6, k=1)],
                                                          perm=[0, 1, 3, 2]), 6, 2),
}


@pytest.mark.parametrize("name", sorted(REFUSED_SINGLE))
def test_single_refusal_names_the_node(name: str) -> None:
    b = B()
    y = REFUSED_SINGLE[name](b)
    with pytest.raises(UnsupportedModelError) as info:
        onnx_to_ann(b.model((6, 4, 4) if "transA" not in name else (6,), y, opset=13))
    assert info.value.problems, name
    for op, node, reason in info.value.problems:
        assert node and reason and op
