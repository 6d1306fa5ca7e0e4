"""Converters of elementwise arithmetic: Add / Sub / Mul / Div / Sum and BatchNormalization.

A constant operand becomes an ``Affine`` node (later folded into the preceding Conv/Dense where
possible); two run-time operands of Add/Sub/Sum become an ``Add`` node (residual connections).
Products of two run-time tensors are refused: a spiking neuron cannot multiply two spike trains.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import onnx

from onnx2snn.frontend.context import Context
from onnx2snn.frontend.registry import Unsupported, converter
from onnx2snn.ir.nodes import Add as AddNode
from onnx2snn.ir.nodes import Affine


def _affine(ctx: Context, out: str, x: str, scale: np.ndarray | None,
            shift: np.ndarray | None) -> None:
    shape = ctx.shape(x)
    scale = None if scale is None else ctx.per_sample(scale, shape, "the constant factor")
    shift = None if shift is None else ctx.per_sample(shift, shape, "the constant term")
    src, view = ctx.pointwise_source(x)
    if view is not None:  # the constants follow the data into the producer's layout
        scale = None if scale is None else view.to_base(scale)
        shift = None if shift is None else view.to_base(shift)
    ctx.bind_pointwise(out, ctx.add(Affine, [src], scale=scale, shift=shift), view)


def product_check(node: onnx.NodeProto, is_const: Callable[[str], bool],
                  graph_outputs: set[str]) -> str | None:
    """Why a Mul/Div cannot convert, judged from which operands are constant; None if it can."""
    ca, cb = is_const(node.input[0]), is_const(node.input[1])
    if not ca and not cb:
        return (f"{node.op_type} of two run-time tensors is not spiking-expressible "
                "(a neuron cannot multiply spike trains)")
    if node.op_type == "Div" and not cb:
        return "dividing a constant by a run-time tensor is not spiking-expressible"
    return None


def _binary(ctx: Context, node: onnx.NodeProto) -> None:
    op = node.op_type
    a, b = node.input[0], node.input[1]
    ca, cb = ctx.is_const(a), ctx.is_const(b)
    if op in ("Mul", "Div"):
        reason = product_check(node, ctx.is_const, ctx.graph_outputs)
        if reason is not None:
            raise Unsupported(reason)
    if not ca and not cb:
        if op == "Add":
            _sum_tensors(ctx, node.output[0], [a, b])
        else:
            _sum_tensors(ctx, node.output[0], [a, b], negate_last=True)
        return
    if ca and cb:
        raise Unsupported("both operands are constant (should have been folded)")
    const = ctx.const(b if cb else a, "the operand")
    x = a if cb else b
    if op == "Add":
        _affine(ctx, node.output[0], x, None, const)
    elif op == "Sub":
        if cb:
            _affine(ctx, node.output[0], x, None, -const)
        else:
            _affine(ctx, node.output[0], x, -np.ones_like(const), const)
    elif op == "Mul":
        _affine(ctx, node.output[0], x, const, None)
    else:  # Div by a constant (product_check refused c / x)
        if np.any(const == 0):
            raise Unsupported("division by a constant that contains zeros")
        _affine(ctx, node.output[0], x, 1.0 / const, None)


def _sum_tensors(ctx: Context, out: str, names: list[str], negate_last: bool = False) -> None:
    shapes = {ctx.shape(n) for n in names}
    if len(shapes) != 1:
        raise Unsupported(f"operands of different shapes {sorted(shapes)}; broadcasting between "
                          "run-time tensors is not supported")
    inputs = [ctx.tensor(n) for n in names]
    if negate_last:
        inputs[-1] = ctx.add(Affine, [inputs[-1]], scale=np.array(-1.0), suffix="neg")
    ctx.set_tensor(out, ctx.add(AddNode, inputs))


@converter("Add", versions=(1, 14))
def Add(ctx: Context, node: onnx.NodeProto) -> None:
    """x + c (a bias) or x + y (a residual sum)."""
    _binary(ctx, node)


@converter("Sub", versions=(1, 14))
def Sub(ctx: Context, node: onnx.NodeProto) -> None:
    """x - c, c - x or x - y."""
    _binary(ctx, node)


@converter("Mul", versions=(1, 14), precheck=product_check)
def Mul(ctx: Context, node: onnx.NodeProto) -> None:
    """x * c with c a constant (scalar, per channel or per element)."""
    _binary(ctx, node)


@converter("Div", versions=(1, 14), precheck=product_check)
def Div(ctx: Context, node: onnx.NodeProto) -> None:
    """x / c with c a non-zero constant."""
    _binary(ctx, node)


@converter("Sum", versions=(1, 13))
def Sum(ctx: Context, node: onnx.NodeProto) -> None:
    """The sum of several tensors (ResNet's residual Sum), constants allowed as an extra term."""
    tensors = [n for n in node.input if not ctx.is_const(n)]
    consts = [ctx.const(n, "a Sum operand") for n in node.input if ctx.is_const(n)]
    if not tensors:
        raise Unsupported("all operands are constant (should have been folded)")
    if len(tensors) == 1:
        out = tensors[0]
        if not consts:
            ctx.set(node.output[0], ctx.value(out))
            return
    else:
        out = node.output[0] + "/sum" if consts else node.output[0]
        _sum_tensors(ctx, out, tensors)
    if consts:
        _affine(ctx, node.output[0], out, None, functools.reduce(np.add, consts))


@converter("BatchNormalization", versions=(1, 15))
def BatchNormalization(ctx: Context, node: onnx.NodeProto) -> None:
    """Inference batch norm y = γ (x − μ)/√(var + ε) + β, as a per-channel affine map."""
    if int(ctx.attr(node, "training_mode", 0)):
        raise Unsupported("training_mode=1; export the model in eval mode")
    if any(o in ctx.used for o in node.output[1:]):
        raise Unsupported("running statistics outputs are used; export the model in eval mode")
    gamma, beta, mean, var = (ctx.const(n, f"BatchNormalization {what}") for n, what in
                              zip(node.input[1:5], ("scale", "bias", "mean", "variance")))
    eps = float(ctx.attr(node, "epsilon", 1e-5))
    shape = ctx.shape(node.input[0])
    for value, param in zip(node.input[1:5], (gamma, beta, mean, var)):
        if param.shape != (shape[0],):
            raise Unsupported(f"parameter {value!r} has shape {param.shape}, but the input has "
                              f"{shape[0]} channels: it must have shape ({shape[0]},)")
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    shift = beta - mean * scale
    channel_shape = (shape[0],) + (1,) * (len(shape) - 1)
    _affine(ctx, node.output[0], node.input[0], scale.reshape(channel_shape),
            shift.reshape(channel_shape))
