"""Converters of the activations that rate-coded spiking neurons can express: Relu, Clip(0, λ),
and the signed LeakyRelu / PRelu (split into two ReLU populations by ``onnx2snn.convert.signed``)."""

from __future__ import annotations

import numpy as np
import onnx

from onnx2snn.frontend.context import Context
from onnx2snn.frontend.registry import Unsupported, converter
from onnx2snn.ir.nodes import LeakyRelu as LeakyReluNode
from onnx2snn.ir.nodes import Relu as ReluNode


@converter("Relu", versions=(1, 14))
def Relu(ctx: Context, node: onnx.NodeProto) -> None:
    """y = max(x, 0)."""
    src, view = ctx.pointwise_source(node.input[0])
    ctx.bind_pointwise(node.output[0], ctx.add(ReluNode, [src]), view)


@converter("Clip", versions=(1, 13))
def Clip(ctx: Context, node: onnx.NodeProto) -> None:
    """Clip(0, λ) and ReLU6: a ReLU whose ceiling λ conversion will use as the layer's scale."""
    if ctx.opset < 11:
        lo = float(ctx.attr(node, "min", -np.inf))
        hi = float(ctx.attr(node, "max", np.inf))
    else:
        lo = float(ctx.const(node.input[1], "Clip's min")) if len(node.input) > 1 and \
            node.input[1] else -np.inf
        hi = float(ctx.const(node.input[2], "Clip's max")) if len(node.input) > 2 and \
            node.input[2] else np.inf
    if lo != 0.0:
        raise Unsupported(f"only Clip with min 0 (a clipped ReLU) is spiking-expressible, got "
                          f"min={lo}")
    if not hi > 0.0:
        raise Unsupported(f"Clip max must be positive, got {hi}")
    ceiling = None if np.isinf(hi) or hi >= np.finfo(np.float32).max else hi
    src, view = ctx.pointwise_source(node.input[0])
    ctx.bind_pointwise(node.output[0], ctx.add(ReluNode, [src], ceiling=ceiling), view)


def _leaky(ctx: Context, node: onnx.NodeProto, slope: np.ndarray, what: str) -> None:
    """Bind a LeakyRelu IR node with per-channel α from ``slope`` (any ONNX-broadcastable shape)."""
    shape = ctx.shape(node.input[0])
    slope = np.asarray(ctx.per_sample(slope, shape, what), dtype=np.float64)
    if not np.all(np.isfinite(slope)):
        raise Unsupported(f"{what} holds NaN or infinite values")
    src, view = ctx.pointwise_source(node.input[0])
    if view is not None:  # the slope follows the data into the producer's layout
        slope = view.to_base(slope)
    base = ctx.node_shape(src)
    full = np.broadcast_to(slope, base).reshape(base[0], -1)
    if not np.all(full == full[:, :1]):
        raise Unsupported(f"{what} varies over spatial positions (shape {slope.shape} on a "
                          f"tensor of shape {tuple(shape)}); only one slope per channel, or one "
                          "for all, converts: export the slope with shape (C, 1, 1) or (1,)")
    alpha = full[:, 0].reshape((base[0],) + (1,) * (len(base) - 1))
    ctx.bind_pointwise(node.output[0], ctx.add(LeakyReluNode, [src], alpha=alpha), view)


@converter("LeakyRelu", versions=(1, 16))
def LeakyRelu(ctx: Context, node: onnx.NodeProto) -> None:
    """y = x for x ≥ 0, α·x below: two ReLU populations, ReLU(x) − α·ReLU(−x)."""
    alpha = ctx.attr(node, "alpha", 0.01)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise Unsupported(f"LeakyRelu's alpha must be one float, got {alpha!r}")
    _leaky(ctx, node, np.asarray(float(alpha)), "LeakyRelu's alpha")


@converter("PRelu", versions=(1, 16))
def PRelu(ctx: Context, node: onnx.NodeProto) -> None:
    """PReLU with one slope per channel (or one for all): as LeakyRelu, α per channel."""
    _leaky(ctx, node, ctx.const(node.input[1], "PRelu's slope"), "PRelu's slope")
