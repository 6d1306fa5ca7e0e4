"""Chains of linear layers written as single synapse layers, for targets whose synapses read neurons.

On Loihi every synapse process reads the spikes (or graded messages) of a population, so two
linear layers in a row have no form there: a MobileNetV2 linear bottleneck (projection Conv →
residual Add → next block's expansion Conv, no neurons between), an average pool feeding a
residual Add, the per-channel gain that ``--maxpool avg`` leaves behind a pool. A chain of linear
maps is one linear map; ``compose_chains`` rewrites every synapse layer that reads another linear
layer as synapses that read sources (populations, the input) directly, with the same values in
exact arithmetic (the composed weights are rounded once, in float64).

Rules, with E a layer reading the output of a linear layer P (weights W, biases b):

* pools and per-channel affine maps first become depthwise convolutions (``as_conv``): an
  AvgPool gets weights 1/(KH·KW) (refused where the divisor varies between windows: padding that
  is not counted, partial ceil-mode windows); an Affine gets 1×1 weights ``scale`` and bias
  ``shift``;
* a sum distributes: E(Σ_k t_k) = Σ_k E'(t_k) + b_E, with E' = E without its bias, which stays on
  the first term (residual sums, the parts of a split Concat);
* Dense ∘ Dense: W = W_E·W_P;
* Dense ∘ flatten ∘ Conv: W = W_E·M_P, with M_P the matrix of flatten∘P, computed as P's adjoint
  (a transposed convolution, ``conv_adjoint``) applied to the rows of W_E;
* Dense ∘ flatten ∘ a pool or affine map that ``as_conv`` refuses (``dense_after``): a pool is
  its window sums (a depthwise convolution of ones) divided per window, W = (W_E / n)·K; an
  affine map is W_E·diag(scale); such a map is refused only if something else reads it;
* Conv ∘ Conv
  - E 1×1 (unpadded, stride S_E): P's geometry with stride S_P·S_E (E keeps every S_E-th
    position of P's output: the same windows of the input, and the same output size),
    W[o,c,u,v] = Σ_m W_E[o,m]·W_P[m,c,u,v];
  - P 1×1 (unit stride, unpadded): E's geometry, W[o,c,u,v] = Σ_m W_E[o,m,u,v]·W_P[m,c];
  - P a patch map (kernel = stride, unpadded, undilated; an average pool of kernel = stride
    is one; the map's size divisible by the kernel where E pads the bottom or the right) and E
    undilated: kernel K_E·K_P, stride S_E·K_P,
    padding P_E·K_P, W[o,c,u·K_P+a,v·K_P+b] = Σ_m W_E[o,m,u,v]·W_P[m,c,a,b];
  - other pairs (e.g. two padded 3×3 convolutions) are refused, naming both;
* the bias is b_E + E'(b_P), E' applied to P's bias as a constant map (E's zero padding
  included); for a convolution it is the same at every position of a channel unless E pads the
  map and b_P ≠ 0 (an input normalisation x·s + t before a padded first convolution): then the
  composed convolution has one bias per output position, which the Loihi target puts in the
  population it feeds (a bias per neuron).

Convolutions are composed with dense (O, C, KH, KW) weights; a result that is diagonal in the
channels becomes a depthwise convolution again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np

from onnx2snn import numerics
from onnx2snn.errors import PassError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Add, Affine, AvgPool, Conv, Dense, Input, Node, Reshape

Refuse = Callable[[Node, str], PassError]  # builds the target's error naming a node
IsSource = Callable[[Node], bool]  # what a synapse may read (populations, the input)


def _plain_refusal(node: Node, message: str) -> PassError:
    return PassError(f"{node.kind} node {node.name!r}: {message}")


def prune(graph: Graph, nodes: list[Node]) -> Graph:
    """``graph`` with ``nodes``, less those that no output depends on (inputs stay)."""
    need = set(graph.outputs)
    kept = []
    for n in reversed(nodes):
        if n.name in need or isinstance(n, Input):
            kept.append(n)
            need.update(n.inputs)
    return graph.with_nodes(reversed(kept))


# -- pools and affine maps as convolutions -------------------------------------------------------
def as_conv(node: AvgPool | Affine, in_shape: tuple[int, ...],
            refuse: Refuse = _plain_refusal) -> Conv | Dense:
    """The depthwise convolution (Dense for a vector Affine) equal to an AvgPool or an Affine."""
    if isinstance(node, AvgPool):
        kh, kw = node.kernel
        divisor = numerics.pool_divisor(tuple(in_shape[1:]), node.kernel, node.strides,  # type: ignore[arg-type]
                                        node.pads, node.count_include_pad, node.ceil_mode)
        c = in_shape[0]
        conv = Conv(name=node.name, inputs=node.inputs, shape=node.shape, origin=node.origin,
                    weight=np.full((c, 1, kh, kw), 1.0 / (kh * kw)), strides=node.strides,
                    pads=node.pads, groups=c)
        if np.any(divisor != kh * kw) or conv.infer_shape([in_shape]) != node.shape:
            raise refuse(node, "divides its edge windows by fewer cells than the kernel has "
                         "(padding that is not counted, or ceil mode): no convolution with one "
                         "weight per channel expresses it; export with count_include_pad=1 or "
                         "without padding")
        return conv
    if len(node.shape) == 1:
        scale = np.broadcast_to(1.0 if node.scale is None else node.scale, node.shape)
        shift = np.broadcast_to(0.0 if node.shift is None else node.shift, node.shape)
        return Dense(name=node.name, inputs=node.inputs, shape=node.shape, origin=node.origin,
                     weight=np.diag(scale.astype(np.float64)), bias=shift.astype(np.float64))
    per = node.per_channel()
    if per is None:
        raise refuse(node, "a scale/shift that varies within a channel has no synapse form")
    scale, shift = per
    c = node.shape[0]
    return Conv(name=node.name, inputs=node.inputs, shape=node.shape, origin=node.origin,
                weight=scale.reshape(c, 1, 1, 1), bias=shift, groups=c)


def dense_after(e: Dense, p: AvgPool | Affine, in_shape: tuple[int, ...]) -> Dense:
    """E∘flatten∘P for a map P that no convolution expresses (``as_conv`` refused it: an average
    pool whose divisor varies between windows, an affine map that varies within a channel),
    reading P's input flattened. A pool is its window sums K (a depthwise convolution of ones,
    over the padding ceil mode adds too) divided by each window's count n: W = (W_E / n)·K,
    computed with K's adjoint; an affine map is W_E·diag(scale), bias b_E + W_E·shift.
    """
    we = e.weight.astype(np.float64)
    bias = None if e.bias is None else e.bias.astype(np.float64)
    if isinstance(p, AvgPool):
        c = in_shape[0]
        hw = (in_shape[1], in_shape[2])
        _, full = numerics.pool_geometry(hw, p.kernel, p.strides, p.pads, (1, 1), p.ceil_mode)
        sums = Conv(name=p.name, inputs=p.inputs, shape=p.shape,
                    weight=np.ones((c, 1) + tuple(p.kernel)), strides=p.strides, pads=full,
                    groups=c)
        assert sums.infer_shape([in_shape]) == p.shape
        count = numerics.pool_divisor(hw, p.kernel, p.strides, p.pads, p.count_include_pad,
                                      p.ceil_mode)
        rows = we.reshape((-1,) + tuple(p.shape)) / count
        w = conv_adjoint(sums, rows, in_shape).reshape(we.shape[0], -1)
    else:
        scale = 1.0 if p.scale is None else p.scale
        w = we * np.broadcast_to(scale, p.shape).astype(np.float64).reshape(-1)
        if p.shift is not None:
            shift = np.broadcast_to(p.shift, p.shape).astype(np.float64).reshape(-1)
            bias = (0.0 if bias is None else bias) + we @ shift
    return Dense(name=e.name, inputs=p.inputs, shape=e.shape, origin=e.origin + p.origin,
                 weight=w, bias=bias)


# -- composing two layers ------------------------------------------------------------------------
def full_weight(conv: Conv) -> np.ndarray:
    """The (O, C, KH, KW) weights of a grouped convolution, zero between groups."""
    return numerics.merge_groups(conv.weight.astype(np.float64), conv.groups, conv.groups)


def _regrouped(w: np.ndarray) -> tuple[np.ndarray, int]:
    """(weights, groups): depthwise when ``w`` (O, C, KH, KW) is diagonal in the channels."""
    o, c = w.shape[:2]
    if o == c and o > 1:
        diag = w[np.arange(o), np.arange(o)]
        off = w.copy()
        off[np.arange(o), np.arange(o)] = 0.0
        if not np.any(off):
            return diag[:, None], o
    return w, 1


def conv_adjoint(conv: Conv, y: np.ndarray, in_shape: tuple[int, ...]) -> np.ndarray:
    """x = Pᵀy for the bias-free convolution P: <P(x'), y> = <x', x> for every x'.

    ``y`` is (B, O, OH, OW), the result (B, C, H, W) with (C, H, W) = ``in_shape``: each output
    position sends W[o, c, u, v]·y back to the input cell it read (a transposed convolution).
    """
    o, cg, kh, kw = conv.weight.shape
    g = conv.groups
    og = o // g
    b, _, oh, ow = y.shape
    c, h, wd = in_shape
    t, left, bottom, r = conv.pads
    sh, sw = conv.strides
    dh, dw = conv.dilations
    xp = np.zeros((b, c, h + t + bottom, wd + left + r))
    yg = y.reshape(b, g, og, oh, ow).astype(np.float64)
    wg = conv.weight.reshape(g, og, cg, kh, kw).astype(np.float64)
    for u in range(kh):
        for v in range(kw):
            back = np.einsum("bgohw,goc->bgchw", yg, wg[:, :, :, u, v]).reshape(b, c, oh, ow)
            xp[:, :, u * dh:u * dh + (oh - 1) * sh + 1:sh, v * dw:v * dw + (ow - 1) * sw + 1:sw] \
                += back
    return xp[:, :, t:t + h, left:left + wd]


def _is_patch(p: Conv, in_shape: tuple[int, ...], e: Conv) -> bool:
    """P maps disjoint K×K patches (kernel = stride, unpadded, undilated) and, where E pads the
    bottom or the right of P's output, the map divides into whole patches: the rows and
    columns no patch reads (the rest of the division) would stand where E reads zeros."""
    kh, kw = p.weight.shape[2:]
    return (tuple(p.strides) == (kh, kw) and not any(p.pads) and tuple(p.dilations) == (1, 1)
            and (in_shape[1] % kh == 0 or e.pads[2] == 0)
            and (in_shape[2] % kw == 0 or e.pads[3] == 0))


def _is_1x1(conv: Conv) -> bool:
    """1×1 and unpadded (any stride): a channel mix of a subsampled map."""
    return conv.weight.shape[2:] == (1, 1) and not any(conv.pads)


def _is_pointwise(conv: Conv) -> bool:
    """1×1, unpadded and of unit stride: a channel mix of the whole map."""
    return _is_1x1(conv) and tuple(conv.strides) == (1, 1)


def _bias_map(p: Conv | Dense) -> np.ndarray | None:
    """P's bias as a map of P's output shape (None without a bias)."""
    if p.bias is None:
        return None
    b = p.bias.astype(np.float64)
    if b.ndim == len(p.shape):  # one per position (or per channel, broadcasting)
        return np.broadcast_to(b, p.shape)
    return np.broadcast_to(b.reshape((-1,) + (1,) * (len(p.shape) - 1)), p.shape)


def compose(e: Conv | Dense, p: Conv | Dense, in_shape: tuple[int, ...],
            refuse: Refuse = _plain_refusal) -> Conv | Dense:
    """E∘P as one layer named like E, reading P's input (of shape ``in_shape``).

    A Dense E reads P's output flattened; the Dense returned reads P's input flattened (it reads
    P's input node itself, and the caller inserts the flatten where that input is not a vector).
    """
    origin = e.origin + p.origin
    b_p = _bias_map(p)
    if isinstance(e, Dense):
        if isinstance(p, Dense):
            w = e.weight.astype(np.float64) @ p.weight.astype(np.float64)
        else:
            rows = e.weight.astype(np.float64).reshape((-1,) + tuple(p.shape))
            w = conv_adjoint(p, rows, in_shape).reshape(e.weight.shape[0], -1)
        bias = None if e.bias is None else e.bias.astype(np.float64)
        if b_p is not None:
            bias = (0.0 if bias is None else bias) + e.weight.astype(np.float64) @ b_p.reshape(-1)
        return Dense(name=e.name, inputs=p.inputs, shape=e.shape, origin=origin, weight=w,
                     bias=bias)
    if not isinstance(p, Conv):
        raise refuse(e, f"reads the vector output of {p.kind} node {p.name!r} as a map")
    we, wp = full_weight(e), full_weight(p)
    geometry: dict[str, tuple[int, ...]]
    if _is_1x1(e):
        w = np.einsum("om,mcuv->ocuv", we[:, :, 0, 0], wp)
        geometry = {"strides": (p.strides[0] * e.strides[0], p.strides[1] * e.strides[1]),
                    "pads": p.pads, "dilations": p.dilations}
    elif _is_pointwise(p):
        w = np.einsum("omuv,mc->ocuv", we, wp[:, :, 0, 0])
        geometry = {"strides": e.strides, "pads": e.pads, "dilations": e.dilations}
    elif _is_patch(p, in_shape, e) and tuple(e.dilations) == (1, 1):
        kh, kw = wp.shape[2:]
        o, c = we.shape[0], wp.shape[1]
        w = np.einsum("omuv,mcab->ocuavb", we, wp).reshape(
            o, c, we.shape[2] * kh, we.shape[3] * kw)
        t, left, bottom, r = e.pads
        geometry = {"strides": (e.strides[0] * kh, e.strides[1] * kw),
                    "pads": (t * kh, left * kw, bottom * kh, r * kw), "dilations": (1, 1)}
    else:
        raise refuse(e, f"reads the output of Conv {p.name!r} with no neurons between; two "
                     "convolutions compose into one only when the second is 1×1 and unpadded, "
                     "the first is 1×1, unpadded and of unit stride, or the first one's kernel "
                     "equals its stride")
    bias = _bias_map(e)
    if b_p is not None:
        through = e.replace(bias=None).forward(b_p[None])[0]
        bias = through if bias is None else bias + through
    if bias is not None:
        flat = bias.reshape(e.shape[0], -1)
        if np.allclose(flat, flat[:, :1], rtol=1e-12,
                       atol=1e-12 * max(float(np.abs(flat).max()), 1e-300)):
            bias = flat[:, 0].copy()  # the same at every position: one per channel
        else:
            bias = np.array(bias)  # E pads a biased map: the edges get another bias
    weight, groups = _regrouped(w)
    conv = Conv(name=e.name, inputs=p.inputs, shape=e.shape, origin=origin, weight=weight,
                bias=bias, groups=groups, **geometry)  # type: ignore[arg-type]
    if conv.infer_shape([in_shape]) != e.shape:
        raise refuse(e, f"composed with {p.name!r} gives another output size")
    return conv


# -- whole graphs --------------------------------------------------------------------------------
def _behind_views(graph: Graph, name: str) -> Node:
    n = graph[name]
    while isinstance(n, Reshape):
        n = graph[n.inputs[0]]
    return n


def _expand(graph: Graph, s: Conv | Dense, is_source: IsSource, refuse: Refuse) -> list[Node]:
    """Nodes computing ``s`` from sources only, the last one named like ``s``.

    A Dense here may read a map directly, meaning its flatten (see ``compose``).
    """
    p = _behind_views(graph, s.inputs[0])
    if isinstance(s, Conv) and p.name != s.inputs[0]:
        raise refuse(s, "reads a reshaped tensor")
    if is_source(p):
        src = graph[s.inputs[0]]
        if isinstance(s, Dense) and len(src.shape) != 1:
            flat = Reshape(name=f"{s.name}/flat", inputs=s.inputs,
                           shape=(int(np.prod(src.shape)),), origin=s.origin)
            return [flat, s.replace(inputs=(flat.name,))]
        return [s]
    if isinstance(p, Add):
        out: list[Node] = []
        for k, t in enumerate(p.inputs):
            term = cast(Conv | Dense, s.replace(name=f"{s.name}/term{k}", inputs=(t,),
                                                bias=s.bias if k == 0 else None,
                                                origin=s.origin + p.origin))
            out += _expand(graph, term, is_source, refuse)
        out.append(Add(name=s.name, inputs=tuple(f"{s.name}/term{k}" for k in range(len(p.inputs))),
                       shape=s.shape, origin=s.origin))
        return out
    if isinstance(p, (Conv, Dense)):
        return _expand(graph, compose(s, p, graph[p.inputs[0]].shape, refuse), is_source, refuse)
    if isinstance(p, (AvgPool, Affine)):  # one that no convolution expresses (as_conv)
        if isinstance(s, Dense):
            return _expand(graph, dense_after(s, p, graph[p.inputs[0]].shape), is_source,
                           refuse)
        raise refuse(s, f"reads {p.kind} node {p.name!r}, which no convolution expresses")
    raise refuse(s, f"reads {p.kind} node {p.name!r}, which is neither a synapse layer nor "
                 "a population")


def compose_chains(graph: Graph, is_source: IsSource,
                   refuse: Refuse = _plain_refusal) -> Graph:
    """``graph`` with pools and affine maps as convolutions (``as_conv``) and every Conv/Dense
    that reads another linear layer rewritten to read sources only (module docstring). A layer
    that cannot be rewritten is refused only if the result still needs it (not when every reader
    composed it away)."""
    # A layer read only by other linear layers is composed into them and then pruned: that it
    # has no form of its own (a global pool over a residual sum, read by the Dense behind the
    # flatten; a pool that does not count its padding, read by a Dense behind the flatten)
    # matters only if something else still reads it.
    refused: dict[str, PassError] = {}
    nodes: list[Node] = []
    for n in graph.nodes:
        if isinstance(n, (AvgPool, Affine)):
            try:
                n = as_conv(n, graph[n.inputs[0]].shape, refuse)
            except PassError as e:
                refused[n.name] = e  # kept: a Dense behind a flatten can still compose it
        nodes.append(n)
    g = graph.with_nodes(nodes)
    out: list[Node] = []
    changed = False
    for m in g.nodes:
        if isinstance(m, (Conv, Dense)) and not is_source(_behind_views(g, m.inputs[0])):
            changed = True
            try:
                out += _expand(g, m, is_source, refuse)
            except PassError as e:
                refused[m.name] = e
                out.append(m)
        else:
            out.append(m)
    result = prune(g, out) if changed else g
    for n in result.nodes:  # the first refusal, in graph order, of a layer still needed
        if n.name in refused:
            raise refused[n.name]
    return result


__all__ = ["as_conv", "compose", "compose_chains", "conv_adjoint", "dense_after", "full_weight",
           "prune"]
