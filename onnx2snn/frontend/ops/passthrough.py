"""Converters of ops that vanish: Identity, Dropout, Cast to float, Shape, terminal Softmax."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from onnx2snn.frontend.context import BATCH, Const, Context
from onnx2snn.frontend.registry import Unsupported, converter

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
           onnx.TensorProto.BFLOAT16}


@converter("Identity", versions=(1, 25))
def Identity(ctx: Context, node: onnx.NodeProto) -> None:
    """y = x: removed."""
    ctx.set(node.output[0], ctx.value(node.input[0]))


@converter("Dropout", versions=(1, 22))
def Dropout(ctx: Context, node: onnx.NodeProto) -> None:
    """Inference-mode dropout is the identity: removed."""
    if len(node.input) > 2 and node.input[2] and bool(ctx.const(node.input[2],
                                                                "Dropout training_mode")):
        raise Unsupported("Dropout in training mode; export the model in eval mode")
    if len(node.output) > 1 and node.output[1] in ctx.used:
        raise Unsupported("the mask output of Dropout is used")
    ctx.set(node.output[0], ctx.value(node.input[0]))


@converter("Cast", versions=(6, 28))
def Cast(ctx: Context, node: onnx.NodeProto) -> None:
    """A cast of a run-time tensor to a float type is a no-op for the spiking network."""
    if int(ctx.attr(node, "to")) not in _FLOATS:
        raise Unsupported("a cast of a run-time tensor to a non-float type")
    ctx.set(node.output[0], ctx.value(node.input[0]))


@converter("Shape", versions=(1, 25))
def Shape(ctx: Context, node: onnx.NodeProto) -> None:
    """The static shape, with the batch entry symbolic, as a constant (feeds shape arithmetic)."""
    full = np.array((BATCH,) + tuple(ctx.shape(node.input[0])), dtype=np.int64)
    start = int(ctx.attr(node, "start", 0))
    end = ctx.attr(node, "end")
    ctx.set(node.output[0], Const(full[start:None if end is None else int(end)]))


def terminal_check(node: onnx.NodeProto, is_const: Callable[[str], bool],
                   graph_outputs: set[str]) -> str | None:
    """A Softmax/LogSoftmax converts only when its output is a graph output."""
    if node.output[0] in graph_outputs:
        return None
    return (f"{node.op_type} inside the network is not spiking-expressible; only a final "
            "Softmax/LogSoftmax (dropped: argmax is unchanged) is allowed")


def _terminal(ctx: Context, node: onnx.NodeProto) -> None:
    reason = terminal_check(node, ctx.is_const, ctx.graph_outputs)
    if reason is not None:
        raise Unsupported(reason)
    ctx.dropped.append(f"{node.op_type} {ctx.current_name} (final; argmax-invariant)")
    ctx.pre_softmax[node.output[0]] = node.input[0]
    ctx.set(node.output[0], ctx.value(node.input[0]))


@converter("Softmax", versions=(1, 13), precheck=terminal_check)
def Softmax(ctx: Context, node: onnx.NodeProto) -> None:
    """A final Softmax is dropped (the prediction's argmax does not change); elsewhere refused."""
    _terminal(ctx, node)


@converter("LogSoftmax", versions=(1, 13), precheck=terminal_check)
def LogSoftmax(ctx: Context, node: onnx.NodeProto) -> None:
    """A final LogSoftmax is dropped like a final Softmax; elsewhere refused."""
    _terminal(ctx, node)
