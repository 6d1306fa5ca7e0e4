"""Converters of pooling: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool."""

from __future__ import annotations

import onnx

from onnx2snn.frontend.context import Context
from onnx2snn.frontend.ops.spatial import spatial_attrs
from onnx2snn.frontend.registry import Unsupported, converter
from onnx2snn.ir.nodes import AvgPool, MaxPool


def _input_chw(ctx: Context, node: onnx.NodeProto) -> tuple[int, ...]:
    shape = ctx.shape(node.input[0])
    if len(shape) != 3:
        raise Unsupported(f"only 2-D pooling of (C, H, W) inputs is supported, got {shape}")
    return shape


@converter("MaxPool", versions=(1, 22))
def MaxPool_(ctx: Context, node: onnx.NodeProto) -> None:
    """Max pooling with strides, pads, auto_pad, dilations and ceil_mode."""
    if len(node.output) > 1 and node.output[1] in ctx.used:
        raise Unsupported("the Indices output of MaxPool is used; only the values are supported")
    shape = _input_chw(ctx, node)
    kernel = tuple(ctx.attr(node, "kernel_shape"))
    ceil = bool(ctx.attr(node, "ceil_mode", 0))
    strides, pads, dilations = spatial_attrs(ctx, node, shape[1:], kernel, ceil_mode=ceil)
    ctx.set_tensor(node.output[0], ctx.add(
        MaxPool, [ctx.tensor(node.input[0])], kernel=kernel, strides=strides, pads=pads,
        dilations=dilations, ceil_mode=ceil))


@converter("AveragePool", versions=(1, 22))
def AveragePool(ctx: Context, node: onnx.NodeProto) -> None:
    """Average pooling with strides, pads, auto_pad, count_include_pad and ceil_mode."""
    shape = _input_chw(ctx, node)
    kernel = tuple(ctx.attr(node, "kernel_shape"))
    ceil = bool(ctx.attr(node, "ceil_mode", 0))
    strides, pads, dilations = spatial_attrs(ctx, node, shape[1:], kernel, ceil_mode=ceil)
    if dilations != (1, 1):
        raise Unsupported("dilated average pooling is not supported")
    ctx.set_tensor(node.output[0], ctx.add(
        AvgPool, [ctx.tensor(node.input[0])], kernel=kernel, strides=strides, pads=pads,
        count_include_pad=bool(ctx.attr(node, "count_include_pad", 0)), ceil_mode=ceil))


@converter("GlobalAveragePool", versions=(1, 22))
def GlobalAveragePool(ctx: Context, node: onnx.NodeProto) -> None:
    """The mean over all spatial positions: an average pool whose window is the whole map."""
    shape = _input_chw(ctx, node)
    ctx.set_tensor(node.output[0], ctx.add(
        AvgPool, [ctx.tensor(node.input[0])], kernel=shape[1:], strides=(1, 1)))


@converter("GlobalMaxPool", versions=(1, 22))
def GlobalMaxPool(ctx: Context, node: onnx.NodeProto) -> None:
    """The maximum over all spatial positions."""
    shape = _input_chw(ctx, node)
    ctx.set_tensor(node.output[0], ctx.add(
        MaxPool, [ctx.tensor(node.input[0])], kernel=shape[1:], strides=(1, 1)))


@converter("ReduceMean", versions=(1, 18))
def ReduceMean(ctx: Context, node: onnx.NodeProto) -> None:
    """The mean over both spatial axes (PyTorch dynamo's AdaptiveAvgPool2d(1)): a global average
    pool; with keepdims=0 the (C,) result is a view of it."""
    shape = _input_chw(ctx, node)
    if ctx.opset < 18:
        axes = ctx.attr(node, "axes")
    else:
        axes = ctx.const(node.input[1], "the ReduceMean axes") if len(node.input) > 1 and \
            node.input[1] else None
    spatial = sorted(int(a) + 4 if int(a) < 0 else int(a) for a in (axes if axes is not None
                                                                     else [0, 1, 2, 3]))
    if spatial != [2, 3]:
        raise Unsupported(f"only the mean over the two spatial axes (2, 3) is supported, got axes "
                          f"{[int(a) for a in axes] if axes is not None else 'all'}")
    pooled = ctx.add(AvgPool, [ctx.tensor(node.input[0])], kernel=shape[1:], strides=(1, 1))
    ctx.set_tensor(node.output[0], pooled)
    if not int(ctx.attr(node, "keepdims", 1)):
        t = ctx.tensor_value(node.output[0])
        ctx.set(node.output[0], t.view((shape[0],), None))
