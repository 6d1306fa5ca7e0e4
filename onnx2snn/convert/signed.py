"""Signed activations (LeakyReLU, PReLU) as pairs of ordinary ReLU layers, before calibration.

Spiking neurons send no negative spikes, but a leaky rectifier is the difference of two ReLUs:

    y = LeakyReLU_α(z) = ReLU(z) − α·ReLU(−z)          (exact for every finite α, per channel)

``split_signed_activations`` rewrites the ANN graph so that every ``LeakyRelu`` node ``L`` reading
z = P(x) becomes two ``Relu`` nodes: ``L/pos`` = ReLU(z) and ``L/neg`` = ReLU(−z), where −z is
made by ``P/neg``, a copy of the synapse P with negated weights and bias (an Add of negated
synapses for a residual sum; a −1 depthwise 1×1 synapse where P is no synapse). Calibration, the
recipes, the Loihi quantization and the NIR export then see ordinary ReLU layers; the cost is
twice the neurons of the layer and twice the fan-out of its spikes (docs/conversion.md §8).

The pair reaches the layers that read ``L`` as a *signed value*: parts ``(q_1, …, q_k)`` (IR
nodes) whose channel concatenation T′ (C′ channels) gives T through a channel mix M (C × C′),
T[c] = Σ_c′ M[c, c′]·T′[c′] (for ``L``: parts (pos, neg), M = [I, −diag(α)]). No Concat node is
made: every reader is split into one synapse per part, and their sum is a fan-in, which the
reference simulator, the Loihi network and the NIR graph all have (an Add, as in a residual net).
Readers:

* ``Conv`` (groups = 1) and ``Dense``: synapse k has W_k = W·M_k over the input channels (M_k:
  the columns of M that belong to part k), the bias on the first, all summed by an ``Add``
  named like the reader; a grouped ``Conv`` the same, where each M_k is diagonal (W times it);
* ``AvgPool`` (average and global pooling, and ``--maxpool avg``'s substitute): one pool per
  part; an ``Affine`` that only scales channels (``--maxpool avg``'s gain): M ← diag(s)·M;
* a flattening ``Reshape``: each part flattened, M kept per channel (a channel's H·W elements
  stay together), so the Dense after it gets W_k as above;
* ``Concat`` on channels: the parts of all inputs, M block-diagonal (a plain input is its own
  part);
* a residual ``Add``, a ReLU/LeakyRelu, or a graph output: the value is materialized as a sum of
  1×1 synapses with weights M_k (Dense for vectors), named like ``L`` for an output.

Anything else reading a signed value (MaxPool under ``--maxpool gate``, a Transpose, an Affine with
a shift, …) is refused naming both nodes. MaxPool commutes with a leaky ReLU for α ≥ 0
(``commute_maxpool_relu``), so Conv → MaxPool → LeakyRelu becomes Conv → LeakyRelu → MaxPool
before this pass, and that converts with ``--maxpool avg`` (max over a window of
ReLU(z) − α·ReLU(−z) needs a min-pool of the negative half, which no target has).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnx2snn.convert.maxpool_avg import scale_conv_inputs
from onnx2snn.errors import PassError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import (
    Add,
    Affine,
    AvgPool,
    Concat,
    Conv,
    Dense,
    LeakyRelu,
    MaxPool,
    Node,
    Relu,
    Reshape,
)


@dataclass(frozen=True)
class SignedValue:
    """An ANN tensor T (C channels) carried as ``parts`` whose channel concatenation T′ gives
    T[c, …] = Σ_c′ mix[c, c′]·T′[c′, …]. ``per`` > 1 marks flattened parts: each is a vector of
    C_k·per elements, channel by channel (``per`` = H·W of the feature map it came from)."""

    parts: tuple[str, ...]
    mix: np.ndarray
    per: int = 1

    def blocks(self, widths: list[int]) -> list[np.ndarray]:
        """The columns of ``mix`` that belong to each part (``widths``: channels per part)."""
        return np.split(self.mix, np.cumsum(widths)[:-1], axis=1)


class _Rewriter:
    """Walks the ANN in order, building the new node list and the signed values."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes: list[Node] = []
        self.by_name: dict[str, Node] = {}
        self.signed: dict[str, SignedValue] = {}
        self.made_from: dict[str, str] = {}  # signed value -> the LeakyRelu it comes from

    def emit(self, node: Node) -> str:
        if node.name in self.by_name:
            raise PassError(f"signed activations: the name {node.name!r} is taken; rename the "
                            "ONNX node")
        self.nodes.append(node)
        self.by_name[node.name] = node
        return node.name

    def shape(self, name: str) -> tuple[int, ...]:
        return self.by_name[name].shape

    def widths(self, value: SignedValue) -> list[int]:
        """Channels of each part (elements / per for flattened parts)."""
        return [self.shape(p)[0] // value.per for p in value.parts]

    # -- the split ---------------------------------------------------------------------------
    def split(self, n: LeakyRelu) -> None:
        src = n.inputs[0]
        alpha = n.channel_alpha()
        pos = self.emit(Relu(name=f"{n.name}/pos", inputs=(src,), shape=n.shape,
                             origin=n.origin))
        self.made_from[n.name] = n.name
        if not np.any(alpha):  # a ReLU: the negative half would never count
            self.signed[n.name] = SignedValue((pos,), np.eye(len(alpha)))
            return
        neg = self.emit(Relu(name=f"{n.name}/neg", inputs=(self.negate(src, n),),
                             shape=n.shape, origin=n.origin))
        mix = np.concatenate([np.eye(len(alpha)), -np.diag(alpha)], axis=1)
        self.signed[n.name] = SignedValue((pos, neg), mix)

    def negate(self, name: str, leaky: LeakyRelu) -> str:
        """A node computing −(output of ``name``), built from the synapses that make it."""
        p = self.by_name[name]
        neg_name = f"{name}/neg"
        if neg_name in self.by_name:
            return neg_name
        if isinstance(p, (Conv, Dense)):
            return self.emit(p.replace(name=neg_name, weight=-p.weight,
                                       bias=None if p.bias is None else -p.bias))
        if isinstance(p, Add):
            terms = tuple(self.negate(i, leaky) for i in p.inputs)
            return self.emit(p.replace(name=neg_name, inputs=terms))
        if isinstance(p, Affine):
            scale = -np.ones(()) if p.scale is None else -p.scale
            return self.emit(p.replace(name=neg_name, scale=scale,
                                       shift=None if p.shift is None else -p.shift))
        if isinstance(p, MaxPool):
            raise PassError(
                f"LeakyRelu node {leaky.name!r} (ONNX {', '.join(leaky.origin)}) reads MaxPool "
                f"{name!r}: with a negative slope the two do not commute and the negative half "
                "would need a min-pool; use a slope α ≥ 0 or average pooling")
        c = p.shape[0]
        if len(p.shape) == 1:
            return self.emit(Dense(name=neg_name, inputs=(name,), shape=p.shape, origin=p.origin,
                                   weight=-np.eye(c)))
        return self.emit(Conv(name=neg_name, inputs=(name,), shape=p.shape, origin=p.origin,
                              weight=-np.ones((c, 1, 1, 1)), groups=c))

    # -- readers -----------------------------------------------------------------------------
    def refuse(self, reader: Node, src: str, why: str) -> PassError:
        leaky = self.graph[self.made_from[src]]
        return PassError(
            f"{reader.kind} node {reader.name!r} (ONNX {', '.join(reader.origin) or '?'}) reads "
            f"the signed output of LeakyRelu/PRelu {leaky.name!r} (ONNX "
            f"{', '.join(leaky.origin) or '?'}): {why}. Signed activations convert when read by "
            "Conv, Gemm/MatMul, average or global pooling, Flatten, a residual Add, Concat on "
            "channels, another activation, or the graph output")

    def read(self, n: Node, maxpool: str) -> None:
        """Rebuild node ``n`` of the original graph, some of whose inputs may be signed."""
        signed = [i for i in n.inputs if i in self.signed]
        if isinstance(n, LeakyRelu):
            if signed:
                n = n.replace(inputs=(self.materialize(self.signed[n.inputs[0]],
                                                       f"{n.name}/in", n),))
            self.split(n)  # type: ignore[arg-type]
            return
        if not signed:
            self.emit(n)
            return
        src = signed[0]
        value = self.signed[src]
        if isinstance(n, (Conv, Dense)):
            self.fan_in(n, value, src)
        elif isinstance(n, AvgPool) and value.per == 1:
            parts = tuple(self.emit(n.replace(name=f"{n.name}/part{k}", inputs=(p,),
                                              shape=(self.shape(p)[0],) + n.shape[1:]))
                          for k, p in enumerate(value.parts))
            self.keep(n.name, SignedValue(parts, value.mix), src)
        elif isinstance(n, Affine) and n.shift is None and n.per_channel() is not None \
                and value.per == 1:
            scale = n.per_channel()[0]  # type: ignore[index]
            self.keep(n.name, SignedValue(value.parts, scale[:, None] * value.mix), src)
        elif isinstance(n, Reshape) and len(n.shape) == 1:
            self.flatten(n, value, src)
        elif isinstance(n, Concat):
            self.concat(n, src)
        elif isinstance(n, (Add, Relu)):
            inputs = tuple(self.materialize(self.signed[i], f"{n.name}/in{k}", n)
                           if i in self.signed else i for k, i in enumerate(n.inputs))
            self.emit(n.replace(inputs=inputs))
        elif isinstance(n, MaxPool):
            why = ("max pooling of a leaky ReLU needs a min-pool of its negative half, which no "
                   "target has; convert with --maxpool avg"
                   if maxpool != "avg" else "max pooling is not linear")
            raise self.refuse(n, src, why)
        else:
            raise self.refuse(n, src, f"a {n.kind} node cannot read a pair of populations")

    def keep(self, name: str, value: SignedValue, src: str) -> None:
        self.signed[name] = value
        self.made_from[name] = self.made_from[src]

    def fan_in(self, n: Conv | Dense, value: SignedValue, src: str) -> None:
        """One synapse per part with weights W·M_k over its input channels (the bias on the
        first), summed by an Add named like ``n``: a fan-in every target has."""
        terms: list[Node] = []
        for k, (p, block) in enumerate(zip(value.parts, value.blocks(self.widths(value)))):
            if not np.any(block):
                continue
            if isinstance(n, Dense):
                w = n.weight.reshape(n.weight.shape[0], block.shape[0], value.per)
                w = np.einsum("ocs,cd->ods", w, block).reshape(w.shape[0], -1)
            elif n.groups == 1:
                w = np.einsum("ockl,cd->odkl", n.weight, block)
            elif block.shape[0] == block.shape[1] and not np.any(block - np.diag(np.diag(block))):
                w = scale_conv_inputs(n, np.diag(block)).weight  # type: ignore[attr-defined]
            else:
                raise self.refuse(n, src, "a grouped convolution reads it through a Concat with "
                                          "other tensors")
            terms.append(n.replace(name=f"{n.name}/part{k}", inputs=(p,), weight=w,
                                   bias=n.bias if not terms else None))
        self.sum_of(n.name, terms, n)

    def sum_of(self, name: str, terms: list[Node], like: Node) -> str:
        """Emit ``terms`` and their Add under ``name`` (a single term takes the name itself)."""
        if len(terms) == 1:
            return self.emit(terms[0].replace(name=name))
        for t in terms:
            self.emit(t)
        return self.emit(Add(name=name, inputs=tuple(t.name for t in terms), shape=terms[0].shape,
                             origin=like.origin))

    def materialize(self, value: SignedValue, name: str, reader: Node) -> str:
        """T itself, as synapses from the parts: Conv 1×1 with weight M_k per part (Dense for
        vectors), summed."""
        terms: list[Node] = []
        for k, (p, block) in enumerate(zip(value.parts, value.blocks(self.widths(value)))):
            shape = self.shape(p)
            if len(shape) == 1:
                terms.append(Dense(name=f"{name}/part{k}", inputs=(p,), origin=reader.origin,
                                   shape=(block.shape[0] * value.per,),
                                   weight=np.kron(block, np.eye(value.per))))
            else:
                terms.append(Conv(name=f"{name}/part{k}", inputs=(p,), origin=reader.origin,
                                  shape=(block.shape[0],) + shape[1:],
                                  weight=block[:, :, None, None]))
        return self.sum_of(name, terms, reader)

    def flatten(self, n: Reshape, value: SignedValue, src: str) -> None:
        """Flatten (C, H, W) → (C·H·W,) part by part; the mix stays per channel."""
        first = self.shape(value.parts[0])
        if len(first) == 1:  # already vectors: nothing to do
            self.keep(n.name, value, src)
            return
        per = int(np.prod(first[1:]))
        parts = tuple(self.emit(n.replace(name=f"{n.name}/part{k}", inputs=(p,),
                                          shape=(int(np.prod(self.shape(p))),)))
                      for k, p in enumerate(value.parts))
        self.keep(n.name, SignedValue(parts, value.mix, per), src)

    def concat(self, n: Concat, src: str) -> None:
        if n.axis != 0:
            raise self.refuse(n, src, f"concatenation along axis {n.axis}, not the channels")
        parts: list[str] = []
        blocks: list[np.ndarray] = []
        for i in n.inputs:
            v = self.signed.get(i) or SignedValue((i,), np.eye(self.shape(i)[0]))
            if v.per != 1:
                raise self.refuse(n, src, "concatenation of flattened feature maps")
            parts += v.parts
            blocks.append(v.mix)
        mix = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)))
        r = q = 0
        for b in blocks:
            mix[r:r + b.shape[0], q:q + b.shape[1]] = b
            r += b.shape[0]
            q += b.shape[1]
        self.keep(n.name, SignedValue(tuple(parts), mix), src)


def split_signed_activations(graph: Graph, maxpool: str = "gate") -> Graph:
    """Rewrite every LeakyRelu of ``graph`` into two ReLU layers (see the module doc).

    ``maxpool`` is the recipe's max-pool policy (only for the wording of a refusal: under
    ``avg`` the pools were already substituted). The result computes the same function.
    """
    if not any(isinstance(n, LeakyRelu) for n in graph.nodes):
        return graph
    rw = _Rewriter(graph)
    for n in graph.nodes:
        rw.read(n, maxpool)
    outputs = []
    for o in graph.outputs:
        if o in rw.signed:
            rw.materialize(rw.signed[o], o, graph[o])
        outputs.append(o)
    return graph.with_nodes(rw.nodes, outputs)


__all__ = ["SignedValue", "split_signed_activations"]
