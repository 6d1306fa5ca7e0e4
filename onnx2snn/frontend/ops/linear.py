"""Converters of the weighted ops: Conv, Gemm, MatMul (ANN synapses)."""

from __future__ import annotations

import numpy as np
import onnx

from onnx2snn.frontend.context import Context
from onnx2snn.frontend.ops.spatial import spatial_attrs
from onnx2snn.frontend.registry import Unsupported, converter
from onnx2snn.ir.nodes import Conv, Dense


@converter("Conv", versions=(1, 22))
def Conv_(ctx: Context, node: onnx.NodeProto) -> None:
    """2-D convolution with groups (incl. depthwise), strides, dilations, pads and auto_pad."""
    x = node.input[0]
    weight = ctx.const(node.input[1], "the Conv weight")
    bias = ctx.const(node.input[2], "the Conv bias") if len(node.input) > 2 and node.input[2] \
        else None
    if weight.ndim != 4:
        raise Unsupported(f"only 2-D convolution is supported (weight has {weight.ndim} axes)")
    in_shape = ctx.shape(x)
    if len(in_shape) != 3:
        raise Unsupported(f"input must be (C, H, W) per sample, got {in_shape}")
    strides, pads, dilations = spatial_attrs(ctx, node, in_shape[1:], weight.shape[2:])
    ctx.set_tensor(node.output[0], ctx.add(
        Conv, [ctx.tensor(x)], weight=weight, bias=bias, strides=strides, pads=pads,
        dilations=dilations, groups=int(ctx.attr(node, "group", 1))))


def _dense_input(ctx: Context, name: str, weight: np.ndarray) -> tuple[str, np.ndarray]:
    """The IR input of a Dense node and its weight with any input permutation folded in.

    A Transpose before Flatten (NHWC-exported Keras models) reorders the features feeding the
    layer; that reordering is absorbed into the weight columns instead of becoming a node.
    """
    t = ctx.tensor_value(name)
    if len(t.shape) != 1:
        raise Unsupported(f"input must be a flat feature vector per sample, got {t.shape}; "
                          "add a Flatten before it")
    if t.index is None:
        return ctx.tensor(name), weight
    source = ctx.add_view_flat(t)
    folded = np.zeros_like(weight)
    folded[:, t.index] = weight
    return source, folded


@converter("Gemm", versions=(1, 13))
def Gemm(ctx: Context, node: onnx.NodeProto) -> None:
    """Y = alpha * A B' + beta * C with A the run-time input and B, C constants."""
    if int(ctx.attr(node, "transA", 0)):
        raise Unsupported("transA=1 would transpose the batch axis; export with transA=0")
    b = ctx.const(node.input[1], "the Gemm weight B")
    if b.ndim != 2:
        raise Unsupported(f"B must be a matrix, got shape {b.shape}")
    alpha = float(ctx.attr(node, "alpha", 1.0))
    beta = float(ctx.attr(node, "beta", 1.0))
    weight = alpha * (b if int(ctx.attr(node, "transB", 0)) else b.T)
    bias = None
    if len(node.input) > 2 and node.input[2]:
        c = ctx.const(node.input[2], "the Gemm bias C")
        bias = beta * ctx.per_sample(c, (weight.shape[0],), "the Gemm bias C")
        bias = np.broadcast_to(bias, (weight.shape[0],))
    source, weight = _dense_input(ctx, node.input[0], weight)
    ctx.set_tensor(node.output[0], ctx.add(Dense, [source], weight=weight, bias=bias))


@converter("MatMul", versions=(1, 13))
def MatMul(ctx: Context, node: onnx.NodeProto) -> None:
    """Y = A B with A the run-time (batch, K) input and B a constant (K, M) matrix."""
    if ctx.is_const(node.input[0]):
        raise Unsupported("the constant must be the second operand (x @ W)")
    b = ctx.const(node.input[1], "the MatMul weight")
    if b.ndim != 2:
        raise Unsupported(f"only (batch, K) @ (K, M) is supported, weight has shape {b.shape}")
    source, weight = _dense_input(ctx, node.input[0], b.T)
    ctx.set_tensor(node.output[0], ctx.add(Dense, [source], weight=weight, bias=None))
