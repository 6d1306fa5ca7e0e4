"""Shared reading of the spatial attributes of Conv and pooling nodes (kernel, strides, pads)."""

from __future__ import annotations

import onnx

from onnx2snn.frontend.context import Context
from onnx2snn.frontend.registry import Unsupported


def spatial_attrs(ctx: Context, node: onnx.NodeProto, in_hw: tuple[int, ...],
                  kernel: tuple[int, ...], with_dilations: bool = True,
                  ceil_mode: bool = False) -> tuple[tuple[int, int], tuple[int, int, int, int],
                                                    tuple[int, int]]:
    """(strides, pads (top, left, bottom, right), dilations) of a 2-D window op, auto_pad resolved."""
    if len(in_hw) != 2 or len(kernel) != 2:
        raise Unsupported(f"only 2-D {node.op_type} is supported (got {len(in_hw)} spatial axes)")
    strides = tuple(ctx.attr(node, "strides") or (1, 1))
    dilations = tuple(ctx.attr(node, "dilations") or (1, 1)) if with_dilations else (1, 1)
    pads = tuple(ctx.attr(node, "pads") or (0, 0, 0, 0))
    auto_pad = ctx.attr(node, "auto_pad", "NOTSET") or "NOTSET"
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(in_hw, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else big)
            end.append(big if auto_pad == "SAME_UPPER" else small)
        pads = (begin[0], begin[1], end[0], end[1])
    elif auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    elif auto_pad != "NOTSET":
        raise Unsupported(f"auto_pad={auto_pad!r} is not an ONNX value")
    if len(strides) != 2 or len(dilations) != 2 or len(pads) != 4:
        raise Unsupported("strides, dilations and pads must be given for two spatial axes")
    if min(pads) < 0:
        raise Unsupported("negative pads (cropping) are not supported")
    return (strides[0], strides[1]), (pads[0], pads[1], pads[2], pads[3]), (dilations[0],
                                                                            dilations[1])
