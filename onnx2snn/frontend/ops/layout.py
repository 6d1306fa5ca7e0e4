"""Converters of layout ops: Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Concat, Pad.

Flatten / Reshape / Squeeze / Unsqueeze / Transpose never touch the data: they change the *view*
of a tensor (see ``frontend.context``). The batch axis must stay first and whole; a view that moves
data between spatial positions is refused when a consumer needs it (channel shuffles are fine),
unless it is a graph input's layout or ends in a Dense layer's weights.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnx2snn.frontend.context import BATCH, Context
from onnx2snn.frontend.registry import Unsupported, converter
from onnx2snn.ir.nodes import Concat as ConcatNode
from onnx2snn.ir.nodes import Pad as PadNode


def _reshape_view(ctx: Context, node: onnx.NodeProto, shape: tuple[int, ...]) -> None:
    t = ctx.tensor_value(node.input[0])
    if int(np.prod(shape)) != int(np.prod(t.shape)):
        raise Unsupported(f"cannot view {t.shape} as {shape} per sample")
    index = None if t.index is None else t.index.reshape(shape)
    ctx.set(node.output[0], t.view(shape, index))


def _axes(ctx: Context, node: onnx.NodeProto, rank: int | None = None) -> list[int] | None:
    """The ``axes`` of Squeeze/Unsqueeze (attribute before opset 13, input after).

    With ``rank`` they are normalized (negative axes counted from the end) and sorted; touching
    the batch axis 0 is refused.
    """
    if ctx.opset < 13:
        axes = ctx.attr(node, "axes")
    else:
        axes = ctx.const(node.input[1], "axes") if len(node.input) > 1 and node.input[1] else None
    if axes is None:
        return None
    raw = [int(a) for a in np.atleast_1d(axes)]
    if rank is None:
        return raw
    out = sorted(a + rank if a < 0 else a for a in raw)
    if 0 in out:
        raise Unsupported("the op would remove or insert the batch axis (axis 0)")
    return out


@converter("Flatten", versions=(1, 25))
def Flatten(ctx: Context, node: onnx.NodeProto) -> None:
    """(N, d1, ..., dk) -> (N, d1*...*dk); only axis=1 keeps the batch axis whole."""
    shape = ctx.shape(node.input[0])
    axis = int(ctx.attr(node, "axis", 1))
    if axis < 0:
        axis += len(shape) + 1
    if axis != 1:
        raise Unsupported(f"Flatten with axis={axis} mixes the batch axis with features; export "
                          "with axis=1")
    _reshape_view(ctx, node, (int(np.prod(shape)),))


@converter("Reshape", versions=(5, 25))
def Reshape(ctx: Context, node: onnx.NodeProto) -> None:
    """A reshape whose first target entry is the batch (symbolic, 0, -1 or the fixed batch size)."""
    in_shape = ctx.shape(node.input[0])
    target = [int(v) for v in ctx.const(node.input[1], "the Reshape target shape").ravel()]
    allowzero = bool(ctx.attr(node, "allowzero", 0))
    full_in = (BATCH,) + tuple(in_shape)
    if not allowzero:
        target = [full_in[i] if v == 0 and i < len(full_in) else v for i, v in enumerate(target)]
    if not target:
        raise Unsupported("a Reshape to a scalar drops the batch axis")
    first, rest = target[0], target[1:]
    n = int(np.prod(in_shape))
    batch_ok = first == BATCH or (ctx.declared_batch is not None and first == ctx.declared_batch)
    if first == -1 and -1 not in rest and int(np.prod(rest)) == n:
        batch_ok = True
    if not batch_ok:
        raise Unsupported(f"the target shape {target} does not keep the batch axis first; export "
                          "with x.reshape(x.shape[0], ...) or a dynamic batch")
    if rest.count(-1) > 1:
        raise Unsupported(f"the target shape {target} has more than one -1")
    if -1 in rest:
        known = int(np.prod([d for d in rest if d != -1]))
        if known == 0 or n % known:
            raise Unsupported(f"cannot view {in_shape} as {target}")
        rest = [n // known if d == -1 else d for d in rest]
    _reshape_view(ctx, node, tuple(rest))


@converter("Squeeze", versions=(1, 25))
def Squeeze(ctx: Context, node: onnx.NodeProto) -> None:
    """Drop axes of size 1 (never the batch axis)."""
    shape = ctx.shape(node.input[0])
    axes = _axes(ctx, node, len(shape) + 1)
    keep = [d for i, d in enumerate(shape, start=1)
            if not (d == 1 and (axes is None or i in axes))]
    if axes is not None and any(a > len(shape) or shape[a - 1] != 1 for a in axes):
        raise Unsupported(f"cannot squeeze axes {axes} of a tensor of shape (N, *{shape})")
    _reshape_view(ctx, node, tuple(keep))


@converter("Unsqueeze", versions=(1, 25))
def Unsqueeze(ctx: Context, node: onnx.NodeProto) -> None:
    """Insert axes of size 1 (never before the batch axis)."""
    shape = list(ctx.shape(node.input[0]))
    raw = _axes(ctx, node) or []
    for a in _axes(ctx, node, len(shape) + 1 + len(raw)) or []:
        shape.insert(a - 1, 1)
    _reshape_view(ctx, node, tuple(shape))


@converter("Transpose", versions=(1, 25))
def Transpose(ctx: Context, node: onnx.NodeProto) -> None:
    """A permutation of the per-sample axes (batch stays first): a view of the same data."""
    t = ctx.tensor_value(node.input[0])
    perm = ctx.attr(node, "perm")
    rank = len(t.shape) + 1
    perm = list(range(rank))[::-1] if perm is None else [int(p) for p in perm]
    if perm[0] != 0:
        raise Unsupported(f"perm {perm} moves the batch axis; it must stay first")
    index = t.flat_index().transpose([p - 1 for p in perm[1:]])
    ctx.set(node.output[0], t.view(index.shape, index, cause=("Transpose", ctx.current_name)))


@converter("Concat", versions=(4, 13))
def Concat(ctx: Context, node: onnx.NodeProto) -> None:
    """Concatenation of run-time tensors along a per-sample axis (channels in practice)."""
    names = [n for n in node.input if n]
    if any(ctx.is_const(n) for n in names):
        raise Unsupported("concatenating a constant with run-time tensors is not supported")
    rank = len(ctx.shape(names[0])) + 1
    axis = int(ctx.attr(node, "axis"))
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        raise Unsupported("concatenation along the batch axis")
    ctx.set_tensor(node.output[0], ctx.add(ConcatNode, [ctx.tensor(n) for n in names],
                                           axis=axis - 1))


@converter("Pad", versions=(2, 25))
def Pad(ctx: Context, node: onnx.NodeProto) -> None:
    """Constant zero padding of H and W (later folded into the next Conv or average pool)."""
    shape = ctx.shape(node.input[0])
    mode = ctx.attr(node, "mode", "constant") or "constant"
    if mode != "constant":
        raise Unsupported(f"Pad mode {mode!r}; only zero (constant) padding is supported")
    rank = len(shape) + 1
    if ctx.opset < 11:
        pads = [int(p) for p in ctx.attr(node, "pads")]
        value = float(ctx.attr(node, "value", 0.0))
    else:
        pads = [int(p) for p in ctx.const(node.input[1], "the pads").ravel()]
        value = float(ctx.const(node.input[2], "the pad value")) if len(node.input) > 2 and \
            node.input[2] else 0.0
        if len(node.input) > 3 and node.input[3]:
            axes = [int(a) + rank if int(a) < 0 else int(a)
                    for a in ctx.const(node.input[3], "the pad axes")]
            full = [0] * (2 * rank)
            for k, a in enumerate(axes):
                full[a], full[a + rank] = pads[k], pads[k + len(axes)]
            pads = full
    if value != 0.0:
        raise Unsupported(f"padding with {value}; only zero padding is supported")
    if rank != 4 or len(pads) != 8:
        raise Unsupported(f"only padding of (N, C, H, W) tensors is supported, got (N, *{shape})")
    if pads[0] or pads[1] or pads[4] or pads[5]:
        raise Unsupported("padding of the batch or channel axis is not supported")
    if min(pads) < 0:
        raise Unsupported("negative pads (cropping) are not supported")
    ctx.set_tensor(node.output[0], ctx.add(PadNode, [ctx.tensor(node.input[0])],
                                           pads=(pads[2], pads[3], pads[6], pads[7])))
