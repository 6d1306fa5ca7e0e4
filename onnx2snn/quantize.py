"""Quantization of an SNN graph to Loihi 2 fixed point (``quantize_for_loihi``).

Two passes. ``prepare_for_loihi`` (float → float) gives the graph the shape of a Lava process
chain, where every synapse sits directly between two populations: chains of linear layers (average
pools, per-channel affine maps, a MobileNetV2 linear bottleneck's projection → residual sum →
expansion) are composed into synapse layers that read populations (``onnx2snn.compose``); a
channel Concat is dissolved by splitting each synapse layer that reads it into one synapse per
concatenated input (its slice of the weights), summed into the layer's neurons like a residual
fan-in, so each slice is quantized with the unit of its own source; an identity skip into a
residual Add becomes a depthwise 1×1 synapse; synapse biases move into the population they feed.
``quantize_for_loihi`` then turns every node into its Loihi kind (``onnx2snn.ir.loihi``):

* each population l gets a gain g_l (integers per ANN unit); the weights into it become
  W_eff = W · unit_src · r · g_l, with unit_src the ANN value of one integer the source sends
  (a spike's λ, 1/gain of a graded value, 1/scale of the input) and r = θ*/θ_c the row scale that
  folds per-channel thresholds into the weights (Lava has one vth per population, θ* = max θ_c);
* W_eff = W_mant · 2**e with |W_mant| ≤ 127 and one exponent e per synapse layer;
* spiking modes: vth = round(θ* · g_l) ≤ 2**17 − 1, bias and v0 in v units (×64);
  sdnn: g_l is the largest gain with 8-bit integer weights and θ*·g_l ≤ 2**21 (the 24-bit
  state), rebalanced between layers; messages are state >> 6 (``state_exp`` = 6, as netx builds
  it), vth is the delta threshold (a multiple of 2**6: by default one message unit, i.e. every
  change is sent).

The registers these numbers must fit, and the arithmetic Lava does with them, are stated and
implemented in ``onnx2snn.targets.loihi2``; this module chooses the scales and the graph's shape.
Anything that cannot be represented is refused with the layer's name; ``report`` gives the
quantization error of every layer. Ranges of the 24-bit states are checked on calibration data
when given (a short fixed-point simulation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnx2snn.compose import compose_chains, prune
from onnx2snn.errors import PassError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.loihi import (
    LoihiConv,
    LoihiDense,
    LoihiInput,
    LoihiNeuron,
    LoihiReadout,
    watch_wraps,
)
from onnx2snn.ir.nodes import Add, Affine, AvgPool, Concat, Conv, Dense, Input, Node, Reshape
from onnx2snn.ir.spiking import IF, Readout
from onnx2snn.targets import loihi2
from onnx2snn.targets.loihi2 import (
    BIAS_MANT_MAX,
    CUBA_BIAS_EXP,
    NEURON_MODES,
    SDNN_BIAS_MANT_MAX,
    SDNN_STATE_EXP,
    V_UNIT,
    VTH_MAX,
    WEIGHT_EXP_MAX,
    WEIGHT_MANT_MAX,
)

UNSUPPORTED_HINTS = {
    "maxpool_gate": "max pooling has no Loihi synapse form; convert with --maxpool avg",
    "maxpool": "convert with --maxpool avg",
    "pad": "a standalone Pad has no Loihi form; export with the padding inside the Conv",
    "channel_permute": "channel permutation is not supported by the Loihi backend yet",
    "transpose": "a channels-last input: Loihi's input takes (C, H, W); re-export the model with "
                 "an NCHW input (docs/exporters.md)",
}


def _refuse(node: Node, message: str) -> PassError:
    where = f" (ONNX {', '.join(node.origin)})" if node.origin else ""
    return PassError(f"Loihi: {node.kind} node {node.name!r}{where}: {message}")


# -- pass 1: structure ---------------------------------------------------------------------------
def unsupported_nodes(graph: Graph) -> list[str]:
    """Every node of a kind Loihi has no form for, one line each with its name and the fix."""
    return [str(_refuse(n, UNSUPPORTED_HINTS[n.kind])) for n in graph.nodes
            if n.kind in UNSUPPORTED_HINTS]


def prepare_for_loihi(graph: Graph) -> Graph:
    """Give a float SNN graph the shape of a Lava process chain, without changing its values.

    In order: average pooling over a channel Concat becomes a Concat of per-input pools; every
    synapse layer reading a Concat is split into one synapse per concatenated input, summed by an
    Add (fan-in, as a residual sum); average pools and affine maps become depthwise convolutions
    and every synapse layer reading another linear layer is composed with it
    (``compose.compose_chains``: a pool of kernel = stride folds into the next Conv, a pool
    behind a flatten into the Dense); an identity skip into an Add becomes a depthwise 1×1
    synapse.
    """
    problems = unsupported_nodes(graph)
    if problems:
        raise PassError("\n  ".join(problems))
    graph = _split_concat_readers(_pools_before_concats(graph))
    graph = compose_chains(graph, lambda n: isinstance(n, (IF, Input)), _refuse)
    return _identity_skips(graph)


def _concat_parts(graph: Graph | Mapping[str, Node], c: Concat) -> list[str]:
    """The tensors ``c`` concatenates, with nested Concats along the same axis flattened."""
    parts: list[str] = []
    for i in c.inputs:
        m = graph[i]
        if not isinstance(m, Concat):
            parts.append(i)
        elif m.axis == c.axis:
            parts += _concat_parts(graph, m)
        else:
            raise _refuse(c, f"concatenates Concat {m.name!r}, which joins another axis")
    return parts


def _per_channel_part(n: AvgPool | Affine, name: str, src: str, channels: slice,
                      c: int) -> Node | None:
    """The part of a channel-wise map ``n`` on the channels ``channels`` (c of them) of its
    input, reading ``src``; None for an Affine that is not the same across each channel."""
    shape = (c,) + n.shape[1:]
    if isinstance(n, AvgPool):
        return n.replace(name=name, inputs=(src,), shape=shape)
    per = n.per_channel()
    if per is None:
        return None
    scale, shift = (a[channels].reshape((c,) + (1,) * (len(shape) - 1)) for a in per)
    return n.replace(name=name, inputs=(src,), shape=shape, scale=scale, shift=shift)


def _pools_before_concats(graph: Graph) -> Graph:
    """M(Concat(a, b, …)) over channels → Concat(M(a), M(b), …) for a channel-wise map M (an
    average pool, a per-channel affine map): equal, and each part can then be composed with the
    synapses that read it."""
    nodes: list[Node] = []
    current: dict[str, Node] = {}
    for n in graph.nodes:
        src = current[n.inputs[0]] if n.inputs else None
        if isinstance(n, (AvgPool, Affine)) and isinstance(src, Concat) and src.axis == 0:
            names = _concat_parts(current, src)
            parts: list[Node] = []
            off = 0
            for k, p in enumerate(names):
                c = current[p].shape[0]
                part = _per_channel_part(n, f"{n.name}/part{k}", p, slice(off, off + c), c)
                if part is None:
                    break
                parts.append(part)
                off += c
            else:
                nodes += parts
                current.update((part.name, part) for part in parts)
                n = Concat(name=n.name, inputs=tuple(p.name for p in parts), shape=n.shape,
                           origin=n.origin + src.origin, axis=0)
        nodes.append(n)
        current[n.name] = n
    return prune(graph, nodes) if len(nodes) > len(graph.nodes) else graph


def _split_concat_readers(graph: Graph) -> Graph:
    """Replace every synapse layer that reads a Concat by one synapse per concatenated input
    (its slice of the weights, the bias on the first) and an Add of them named like it."""
    consumers = graph.consumers()
    replaced: dict[str, list[Node]] = {}
    for c in graph.nodes:
        if not isinstance(c, Concat):
            continue
        parts = _concat_parts(graph, c)
        for r_name in consumers[c.name]:
            r = graph[r_name]
            if isinstance(r, Concat) and r.axis == c.axis:
                continue  # r concatenates c's inputs itself (_concat_parts)
            if isinstance(r, Conv):
                replaced[r.name] = _split_conv(graph, c, parts, r)
            elif isinstance(r, Dense):
                replaced[r.name] = _split_dense(graph, c, parts, r)
            elif (isinstance(r, Reshape) and len(r.shape) == 1 and consumers[r.name]
                  and all(isinstance(graph[d], Dense) for d in consumers[r.name])):
                replaced[r.name] = []
                for d_name in consumers[r.name]:
                    replaced[d_name] = _split_dense(graph, c, parts, graph[d_name])  # type: ignore[arg-type]
            else:
                raise _refuse(c, f"is read by {r.kind} node {r.name!r}: on Loihi a Concat exists "
                              "only as the input of synapse layers (a Conv with groups = 1, or "
                              "Dense layers, directly or behind a flatten), whose weights are "
                              "split per concatenated input")
    if not replaced:
        return graph
    return prune(graph, [m for n in graph.nodes for m in replaced.get(n.name, [n])])


def _fan_in(name: str, synapses: list[Node], like: Node) -> list[Node]:
    """The synapses and the Add that sums them under ``name`` (one synapse takes the name)."""
    if len(synapses) == 1:
        return [synapses[0].replace(name=name)]
    return synapses + [Add(name=name, inputs=tuple(s.name for s in synapses), shape=like.shape,
                           origin=like.origin)]


def _split_conv(graph: Graph, c: Concat, parts: list[str], conv: Conv) -> list[Node]:
    if c.axis != 0:
        raise _refuse(c, f"joins axis {c.axis}, not the channels, and feeds Conv {conv.name!r}")
    if conv.groups != 1:
        raise _refuse(conv, f"reads Concat {c.name!r}: a grouped convolution cannot be split "
                      "per concatenated input")
    syns: list[Node] = []
    off = 0
    for k, p in enumerate(parts):
        ch = graph[p].shape[0]
        syns.append(conv.replace(name=f"{conv.name}/part{k}", inputs=(p,),
                                 weight=conv.weight[:, off:off + ch],
                                 bias=conv.bias if k == 0 else None,
                                 origin=conv.origin + c.origin))
        off += ch
    return _fan_in(conv.name, syns, conv)


def _split_dense(graph: Graph, c: Concat, parts: list[str], dense: Dense) -> list[Node]:
    """Dense layers read a Concat directly (vectors) or through a flatten (any axis)."""
    # the column of every element of the Concat, cut into the parts' blocks
    cols = np.split(np.arange(int(np.prod(c.shape))).reshape(c.shape),
                    np.cumsum([graph[p].shape[c.axis] for p in parts])[:-1], axis=c.axis)
    nodes: list[Node] = []
    syns: list[Node] = []
    for k, (p, col) in enumerate(zip(parts, cols)):
        if len(graph[p].shape) != 1:
            flat = Reshape(name=f"{dense.name}/flat{k}", inputs=(p,), shape=(col.size,),
                           origin=c.origin)
            nodes.append(flat)
            p = flat.name
        syns.append(dense.replace(name=f"{dense.name}/part{k}", inputs=(p,),
                                  weight=dense.weight[:, col.reshape(-1)],
                                  bias=dense.bias if k == 0 else None,
                                  origin=dense.origin + c.origin))
    return nodes + _fan_in(dense.name, syns, dense)


def _identity_skips(graph: Graph) -> Graph:
    """An Add input read straight from a population (or the input) gets a 1×1 depthwise synapse."""
    nodes: list[Node] = []
    for n in graph.nodes:
        if isinstance(n, Add):
            ins = []
            for i in n.inputs:
                src = graph[i]
                if isinstance(src, (IF, Input)):  # identity skip: make it a synapse
                    c = src.shape[0]
                    ident = Conv(name=f"{n.name}/skip:{i}", inputs=(i,), shape=src.shape,
                                 origin=n.origin, weight=np.ones((c, 1, 1, 1)), groups=c)
                    nodes.append(ident)
                    ins.append(ident.name)
                else:
                    ins.append(i)
            n = n.replace(inputs=tuple(ins))
        nodes.append(n)
    return graph.with_nodes(nodes)


# -- pass 2: quantization ------------------------------------------------------------------------
@dataclass
class LoihiQuantization:
    """The quantized graph and what quantization did to each layer."""

    graph: Graph
    layers: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> str:
        """The per-layer quantization report as text."""
        rows = [f"{'layer':<32} {'kind':<8} {'exp':>4} {'mant.bits':>9} {'w err %':>8} "
                f"{'vth':>7} {'vth err %':>9} {'gain':>10}"]
        for r in self.layers:
            rows.append(f"{r['name'][:32]:<32} {r['kind']:<8} {r.get('weight_exp', ''):>4} "
                        f"{r.get('mantissa_bits', ''):>9} {r.get('weight_error_pct', 0):>8.3f} "
                        f"{r.get('vth', ''):>7} {r.get('vth_error_pct', 0):>9.3f} "
                        f"{r.get('gain', 0):>10.4g}")
        return "\n".join(rows)


def _source_of(graph: Graph, name: str) -> tuple[Node, list[Node]]:
    """The population/input a synapse reads, and the views in between."""
    views: list[Node] = []
    n = graph[name]
    while isinstance(n, Reshape):
        views.append(n)
        n = graph[n.inputs[0]]
    if not isinstance(n, (IF, Input)):
        raise _refuse(n, "a synapse must read a population or the input directly "
                      "(two linear layers in a row have no Loihi form)")
    return n, views


def _addends(graph: Graph, n: Node) -> list[Node]:
    """The terms of a (possibly nested) sum: a residual Add of a split Concat's parts."""
    if not isinstance(n, Add):
        return [n]
    return [t for i in n.inputs for t in _addends(graph, graph[i])]


def _synapses_into(graph: Graph, target: Node) -> list[Node]:
    (i,) = target.inputs
    syns = _addends(graph, graph[i])
    for s in syns:
        if not isinstance(s, (Dense, Conv)):
            raise _refuse(s, f"feeds {target.kind} node {target.name!r} directly; a population "
                          "must be fed by Dense/Conv synapses (or their sum)")
    return syns


def _lowest_exp(syn: Node, shared: bool) -> int:
    """The lowest weight exponent a synapse layer may use: 0 for Conv (Lava's CPU model ignores the
    exponent, the weights are pre-multiplied); for Dense 0 when it is the only synapse layer into
    its population (integer weights: what a netx file expresses), else −8 (a residual sum or a
    split Concat, never a netx file, where a source of small units needs the low exponents)."""
    return 0 if isinstance(syn, Conv) or not shared else loihi2.DENSE_WEIGHT_EXP_MIN


def _exp_and_mant(w: np.ndarray, e_lo: int, node: Node) -> tuple[int, np.ndarray]:
    """The exponent and 8-bit mantissas of ``w`` (``loihi2`` rules), refused when they overflow."""
    e = loihi2.weight_exponent(float(np.max(np.abs(w))) if w.size else 0.0, e_lo)
    if e > WEIGHT_EXP_MAX:
        raise _refuse(node, f"weights need exponent {e} > {WEIGHT_EXP_MAX}")
    mant = loihi2.weight_mantissas(w, e)
    if np.max(np.abs(mant), initial=0) > WEIGHT_MANT_MAX:  # rounding can push 126.6 to 127 only
        raise _refuse(node, "weight mantissa overflow")
    return e, mant


def _quantize_nodes(g: Graph, neuron: str, input_bits: int, input_max: float,
                    sdnn_delta: float, limits: dict[str, float],
                    offset: np.ndarray | None = None
                    ) -> tuple[list[Node], list[dict[str, Any]], dict[str, np.ndarray]]:
    """One forward pass: every node in its Loihi kind, populations' gains capped by ``limits``."""
    graded = neuron == "sdnn"
    nodes: list[Node] = []
    unit: dict[str, np.ndarray] = {}  # source name -> ANN value of one integer it sends (bcast)
    bits: dict[str, int] = {}  # source name -> message bits (0 = binary)
    layers: list[dict[str, Any]] = []
    consumed: set[str] = set()
    for n in g.nodes:
        if isinstance(n, Input):
            scale = (2**input_bits - 1) / input_max
            nodes.append(LoihiInput(name=n.name, inputs=(), shape=n.shape, origin=n.origin,
                                    scale=scale, bits=input_bits,
                                    encoding="delta" if graded else "direct",
                                    offset=offset))
            unit[n.name] = np.asarray(1.0 / scale)
            bits[n.name] = input_bits
        elif isinstance(n, (IF, Readout)):
            syns = _synapses_into(g, n)
            for s in syns:
                if s.name in consumed:
                    raise _refuse(s, "feeds more than one population; on Loihi each synapse "
                                  "process sends into one neuron port")
            new, info = _quantize_target(g, n, syns, unit, bits, neuron, sdnn_delta,
                                          limits.get(n.name, math.inf))
            nodes.extend(new)
            layers.extend(info)
            consumed.update(s.name for s in syns)
            if isinstance(n, IF):
                pop = new[-1]
                assert isinstance(pop, LoihiNeuron)
                unit[n.name] = pop.unit
                bits[n.name] = 24 if graded else 0
        elif isinstance(n, Reshape):
            nodes.append(n)
        elif isinstance(n, (Dense, Conv, Add)):
            continue  # emitted with the population it feeds
        else:
            raise _refuse(n, UNSUPPORTED_HINTS.get(n.kind, "has no Loihi form"))
    return nodes, layers, unit


def _rebalance(layers: list[dict[str, Any]], limits: dict[str, float]) -> bool:
    """Sigma-delta gains grow layer by layer (8-bit weights at exponent 0 need g_dst/g_src ≈
    2/max|W|) until a population reaches the 24-bit state cap and the weights into it lose bits.
    Lower the gain of the source population of such a synapse layer by the square root of the
    missing factor, sharing the loss between the two layers. True if a limit changed."""
    gains = {lay["name"]: lay["gain"] for lay in layers if "vth" in lay}
    changed = False
    for lay in layers:
        src = lay.get("source")
        bits = lay.get("mantissa_bits", 8)
        if src is not None and src in gains and 0 < bits < 7:
            new = gains[src] / math.sqrt(2.0 ** (7 - bits))
            if new < limits.get(src, math.inf) * 0.99:
                limits[src] = new
                changed = True
    return changed


def quantize_for_loihi(graph: Graph, neuron: str = "lif", *, input_bits: int = 8,
                       input_max: float | None = None,
                       sdnn_delta: float = 0.0, calib_x: np.ndarray | None = None,
                       check_steps: int = 32) -> LoihiQuantization:
    """Quantize a float SNN graph for Loihi 2 with populations of kind ``neuron``.

    ``input_max`` is the largest input value, sent as 2**input_bits − 1 (default: the
    calibration maximum, else 1). Inputs below zero (normalised data) are sent as x − offset,
    the offset being, per channel (or feature), the calibration minimum where it is negative
    (``input_offset``); the offset's contribution is added back as a shift the first synapses
    compose (a bias, per neuron where a padded convolution reads it). ``sdnn_delta`` is the
    sigma-delta threshold as a fraction of λ (0: send every change). With ``calib_x`` the 24-bit
    state ranges are checked in a fixed-point run of ``check_steps``.
    """
    if neuron not in NEURON_MODES:
        raise PassError(f"unknown neuron mode {neuron!r}; choose one of {', '.join(NEURON_MODES)}")
    offset = input_offset(graph, calib_x)  # None unless calib_x has values below zero
    g = prepare_for_loihi(graph if offset is None else _shift_input(graph, offset))
    if offset is not None:  # the largest value sent is x − offset
        assert calib_x is not None
        input_max = float(np.max(calib_x - offset)) if input_max is None \
            else input_max - float(offset.min())
    elif input_max is None:
        input_max = float(np.max(calib_x)) if calib_x is not None and calib_x.size else 1.0
    if input_max <= 0:
        raise PassError("the input maximum must be positive")
    graded = neuron == "sdnn"
    limits: dict[str, float] = {}
    for _ in range(6):
        nodes, layers, unit = _quantize_nodes(g, neuron, input_bits, input_max,
                                              sdnn_delta, limits, offset)
        if not graded or not _rebalance(layers, limits):
            break
    names = {m.name for m in nodes}
    for n in nodes:  # drop views nobody reads any more
        missing = [i for i in n.inputs if i not in names]
        if missing:
            raise PassError(f"Loihi: internal: {n.name!r} reads {missing}")
    used = {i for m in nodes for i in m.inputs} | set(g.outputs)
    nodes = [m for m in nodes if not (isinstance(m, Reshape) and m.name not in used)]
    latency = _latency(nodes)
    meta = {"loihi": {"neuron": neuron, "input_scale": 1.0 / float(unit[g.inputs[0]]),
                      "input_offset": None if offset is None else offset.reshape(-1).tolist(),
                      "input_bits": input_bits, "input_encoding": "delta" if graded else "direct",
                      "message_bits": 24 if graded else 1, "latency_steps": latency,
                      "layers": layers},
            "stage": "loihi"}
    qgraph = Graph(tuple(nodes), g.outputs, {**dict(g.meta), **meta})
    result = LoihiQuantization(qgraph, layers)
    if calib_x is not None:
        check_ranges(result, calib_x[:64], check_steps)
    return result


def input_offset(graph: Graph, calib_x: np.ndarray | None) -> np.ndarray | None:
    """What the Loihi input subtracts before sending: per channel (C, 1, 1) for a map, per
    feature for a vector, the calibration minimum where it is below zero, else 0; None when no
    calibration value is below zero (or there is no calibration data)."""
    if calib_x is None or not calib_x.size:
        return None
    shape = graph[graph.inputs[0]].shape
    axes = (0, 2, 3) if len(shape) == 3 else (0,)
    low = np.minimum(np.min(np.asarray(calib_x, np.float64), axis=axes), 0.0)
    if not np.any(low < 0):
        return None
    return low.reshape((-1, 1, 1) if len(shape) == 3 else (-1,))


def _shift_input(graph: Graph, offset: np.ndarray) -> Graph:
    """``graph`` reading x − offset: an Affine adding the offset back, between the input and its
    readers (``prepare_for_loihi`` composes it into them)."""
    name = graph.inputs[0]
    shifted = f"{name}/offset"
    nodes: list[Node] = []
    for n in graph.nodes:
        if n.name == name:
            nodes += [n, Affine(name=shifted, inputs=(name,), shape=n.shape, origin=n.origin,
                                shift=offset)]
        else:
            nodes.append(n.replace(inputs=tuple(shifted if i == name else i for i in n.inputs)))
    return graph.with_nodes(nodes)


def _latency(nodes: list[Node]) -> int:
    depth: dict[str, int] = {}
    for n in nodes:
        d = max((depth[i] for i in n.inputs), default=0)
        depth[n.name] = d + (1 if isinstance(n, (LoihiDense, LoihiConv)) else 0)
    return max(depth.values())


def _quantize_target(g: Graph, n: Node, syns: list[Node], unit: dict[str, np.ndarray],
                     bits: dict[str, int], neuron: str,
                     sdnn_delta: float, limit: float = math.inf
                     ) -> tuple[list[Node], list[dict[str, Any]]]:
    shape = n.shape
    c = shape[0]
    is_pop = isinstance(n, IF)
    # row scale: fold per-channel thresholds into the weights (one vth per population)
    if is_pop:
        assert isinstance(n, IF)
        theta = np.broadcast_to(n.threshold.astype(np.float64), shape)
        theta_star = float(theta.max())
        row = theta_star / theta  # per neuron
    else:
        theta_star = 1.0
        row = np.ones(shape)
    row_c = row.reshape(c, -1)
    effs: list[tuple[Node, Node, list[Node], np.ndarray]] = []
    bias = np.zeros(shape)
    for s in syns:
        src, views = _source_of(g, s.inputs[0])
        u = np.broadcast_to(unit[src.name], src.shape)
        if isinstance(s, Dense):
            w = s.weight.astype(np.float64) * u.reshape(-1)[None, :] * row.reshape(-1)[:, None]
        else:
            assert isinstance(s, Conv)
            uc = u.reshape(src.shape[0], -1)
            if not np.all(uc == uc[:, :1]) or not np.all(row_c == row_c[:, :1]):
                raise _refuse(s, "per-pixel scales cannot be folded into a convolution")
            cg = s.weight.shape[1]
            in_unit = uc[:, 0].reshape(s.groups, cg)  # input channels of each group
            per_out = np.repeat(in_unit, s.weight.shape[0] // s.groups, axis=0)  # (O, cg)
            w = s.weight.astype(np.float64) * per_out[:, :, None, None] \
                * row_c[:, 0][:, None, None, None]
            t, left, b, r = s.pads
            if (t, left) != (b, r):
                raise _refuse(s, f"asymmetric padding {s.pads} (top, left, bottom, right); Lava's "
                              "Conv takes symmetric padding only: export with symmetric pads")
        if s.bias is not None:  # per output channel, or per position (``compose``)
            b_s = s.bias if s.bias.ndim == len(shape) else \
                s.bias.reshape((-1,) + (1,) * (len(shape) - 1))
            bias = bias + np.broadcast_to(b_s, shape)
        effs.append((s, src, views, w))
    if isinstance(n, IF) and n.bias is not None:
        bias = bias + np.broadcast_to(n.bias, shape)
    peaks = [max(float(np.max(np.abs(w))), 1e-30) for _, _, _, w in effs]
    # Several synapse processes into one population (residual sum, split Concat) share its gain
    # but each has its own exponent: the gain should leave every one at least 7 mantissa bits at
    # the lowest exponent it can use (``floor``), as long as the largest weights fit exponent 7
    # (``top``); a source sending much smaller units (the 8-bit input next to spikes) needs it.
    shared = len(effs) > 1
    floor = max(64.0 * 2.0**_lowest_exp(s, shared) / p for (s, *_), p in zip(effs, peaks))
    top = min(WEIGHT_MANT_MAX * 2.0**WEIGHT_EXP_MAX / p for p in peaks)
    gain = min(WEIGHT_MANT_MAX / p for p in peaks)  # the largest weights: mantissa 127 at 2**0
    if is_pop and neuron != "sdnn":
        # the bias is mantissa · 2**CUBA_BIAS_EXP in v units (64 per weight unit): at most 4095
        # weight units (netx's CUBA neurons fix bias_exp at 6)
        b_max = float(np.max(np.abs(bias * row), initial=0.0))
        bias_cap = BIAS_MANT_MAX * 2**CUBA_BIAS_EXP / V_UNIT / b_max if b_max > 0 else math.inf
        hi = min(VTH_MAX / theta_star, bias_cap)
        gain = min(gain, hi)
        if theta_star * gain < 256:  # keep >= 8 bits of threshold precision: raise exponents
            boost = min(7, math.ceil(math.log2(256 / (theta_star * gain))))
            gain = min(gain * 2.0**boost, hi)
        gain = max(gain, min(floor, top, hi))
    elif is_pop:
        # graded activations: the largest gain at which every weight into the population is an
        # integer of at most 8 bits at exponent 0 (what a netx file expresses), with the state
        # inside the 24-bit sigma (θ*·g ≤ 2**21 leaves room for activations up to 4θ*), and at
        # most ``limit`` (set by quantize_for_loihi when the consumers need a lower gain);
        # raised towards ``floor`` when several synapse layers share the population
        gain = min(max(gain, min(floor, top)), 2.0**21 / theta_star, limit)
    else:
        gain = max(gain, min(floor, top))
    out: list[Node] = []
    info: list[dict[str, Any]] = []
    syn_names = []
    for s, src, _views, w in effs:
        target = w * gain
        is_conv = isinstance(s, Conv)
        e, mant = _exp_and_mant(target, _lowest_exp(s, shared), s)
        q = mant * 2.0**e
        err = float(np.linalg.norm(q - target)) / max(float(np.linalg.norm(target)), 1e-30) * 100
        mb = bits[src.name]
        if is_conv:
            assert isinstance(s, Conv)
            node: Node = LoihiConv(name=s.name, inputs=s.inputs, shape=s.shape, origin=s.origin,
                                   weight_mant=mant.astype(np.int64), weight_exp=e,
                                   strides=(s.strides[0], s.strides[1]),
                                   pads=(s.pads[0], s.pads[1]),
                                   dilations=(s.dilations[0], s.dilations[1]), groups=s.groups,
                                   message_bits=mb)
        else:
            node = LoihiDense(name=s.name, inputs=s.inputs, shape=s.shape, origin=s.origin,
                              weight_mant=mant.astype(np.int64), weight_exp=e, message_bits=mb)
        out.append(node)
        syn_names.append(s.name)
        max_m = float(np.max(np.abs(mant))) if mant.size else 0.0
        info.append({"name": s.name, "kind": "conv" if is_conv else "dense", "weight_exp": e,
                     "mantissa_bits": int(math.ceil(math.log2(max_m + 1))) + 1 if max_m else 0,
                     "weight_error_pct": err, "gain": gain, "target": n.name,
                     "synapses": int(mant.size if not is_conv else s.macs([g[s.inputs[0]].shape])),
                     "source": src.name})
    (i,) = n.inputs
    if isinstance(g[i], Add):
        add = g[i]
        out.append(Add(name=add.name, inputs=tuple(syn_names), shape=add.shape, origin=add.origin))
    feed = i
    if not is_pop:
        assert isinstance(n, Readout)
        out.append(LoihiReadout(name=n.name, inputs=(feed,), shape=shape, origin=n.origin,
                                scale=1.0 / gain, bias=bias,
                                accumulate="sigma" if neuron == "sdnn" else "rate"))
        return out, info
    assert isinstance(n, IF)
    v0 = np.broadcast_to(n.v0.astype(np.float64), shape) * row
    state_exp = 0
    if neuron == "sdnn":
        # messages are state >> 6; vth and bias are multiples of 2**6 state units, as netx
        # builds them (SDNN_STATE_EXP)
        state_exp = SDNN_STATE_EXP
        step = 2**state_exp
        vth = step * max(1, math.ceil(sdnn_delta * theta_star * gain / step))
        bias_exp = state_exp
        b_s = bias * row * gain  # state units
        bias_mant = np.round(b_s / step)
        if np.max(np.abs(bias_mant), initial=0) > SDNN_BIAS_MANT_MAX:
            raise _refuse(n, "bias does not fit the sigma-delta bias register")
        v0_int = np.zeros(shape)
        unit_out = 2.0**state_exp / (gain * row)
        bias_err = float(np.max(np.abs(bias_mant * step - b_s), initial=0) / (theta_star * gain)) * 100
    else:
        vth = int(round(theta_star * gain))
        if vth < 1 or vth > VTH_MAX:
            raise _refuse(n, f"threshold mantissa {vth} does not fit 17 bits")
        b_v = bias * row * gain * V_UNIT  # v units
        bias_exp = CUBA_BIAS_EXP
        bias_mant = np.round(b_v / 2.0**bias_exp)
        if np.max(np.abs(bias_mant), initial=0) > BIAS_MANT_MAX:
            raise _refuse(n, f"bias mantissa {int(np.max(np.abs(bias_mant)))} does not fit 13 bits")
        bias_err = float(np.max(np.abs(bias_mant * 2.0**bias_exp - b_v), initial=0)
                         / (theta_star * gain * V_UNIT)) * 100
        v0_int = np.round(v0 * gain * V_UNIT)
        unit_out = np.broadcast_to(n.out_scale.astype(np.float64), shape)
        if n.reset == "zero" and neuron == "if-subtract":
            pass  # the mode decides the reset on Loihi; the float graph's reset is a recipe hint
    unit_out = _compact(np.asarray(unit_out, np.float64), shape)
    pop = LoihiNeuron(name=n.name, inputs=(feed,), shape=shape, origin=n.origin, mode=neuron,
                      vth=vth, bias_mant=bias_mant.astype(np.int64), bias_exp=bias_exp,
                      v0=v0_int.astype(np.int64), unit=unit_out, state_exp=state_exp)
    out.append(pop)
    info.append({"name": n.name, "kind": neuron, "vth": vth, "gain": gain, "state_exp": state_exp,
                 "vth_error_pct": abs(vth - theta_star * gain) / (theta_star * gain) * 100
                 if neuron != "sdnn" else 0.0,
                 "bias_exp": bias_exp, "bias_error_pct_of_vth": bias_err,
                 "neurons": int(np.prod(shape))})
    return out, info


def _compact(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A scalar or per-channel (C, 1, ...) array when ``a`` is constant along those axes."""
    full = np.broadcast_to(a, shape)
    if np.all(full == full.flat[0]):
        return np.asarray(full.flat[0])
    per_c = full.reshape(shape[0], -1)
    if len(shape) > 1 and np.all(per_c == per_c[:, :1]):
        return per_c[:, :1].reshape((shape[0],) + (1,) * (len(shape) - 1)).copy()
    return np.array(full)


def check_ranges(q: LoihiQuantization, x: np.ndarray, timesteps: int) -> dict[str, float]:
    """Run the fixed-point reference on ``x``; refuse if a 24-bit state would wrap or saturate.

    Returns, per synapse layer, the largest |input| seen as a fraction of what the state holds.
    """
    from onnx2snn.backends.numpy.fixed_point import simulate_fixed

    g = q.graph
    feeds = {n.name: n for n in g.nodes if isinstance(n, LoihiNeuron)}
    rec = [n.inputs[0] for n in feeds.values()]
    with watch_wraps() as wrapped:
        res = simulate_fixed(g, x, timesteps, record=rec)
    if wrapped:
        names = ", ".join(repr(n.name) for n in g.nodes if n.name in wrapped)
        raise PassError(f"Loihi: the output of synapse layer(s) {names} leaves the 24 bits of a "
                        "message on calibration data and would wrap around (in Lava as in the "
                        "reference, so the network would no longer compute the ANN's function): "
                        "use a spiking neuron mode (--neuron lif or if-subtract), whose messages "
                        "are single spikes")
    usage: dict[str, float] = {}
    for n in feeds.values():
        a = np.abs(res.recorded[n.inputs[0]])
        peak = float(a.max()) if a.size else 0.0
        if n.mode == "sdnn":
            sigma = np.abs(np.cumsum(res.recorded[n.inputs[0]], axis=0)).max()
            frac = float(sigma) / loihi2.UV_MAX
        else:
            frac = peak * V_UNIT / loihi2.UV_MAX
        usage[n.name] = frac
        if frac >= 1.0:
            raise PassError(f"Loihi: population {n.name!r}: its input reaches {frac:.2f}× the "
                            "24-bit state on calibration data; lower the input scale "
                            "(input_max) or the sdnn bits")
    for layer in q.layers:
        if layer["name"] in usage:
            layer["state_usage"] = usage[layer["name"]]
    return usage


__all__ = ["LoihiQuantization", "check_ranges", "prepare_for_loihi", "quantize_for_loihi",
           "unsupported_nodes"]
