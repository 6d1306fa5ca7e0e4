"""Converters of the activations that rate-coded spiking neurons can express: Relu and Clip(0, λ)."""

from __future__ import annotations

import numpy as np
import onnx

from onnx2snn.frontend.context import Context
from onnx2snn.frontend.registry import Unsupported, converter
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
