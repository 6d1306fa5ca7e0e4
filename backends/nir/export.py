"""SNN graph → ``nir.NIRGraph`` (DESIGN.md §6): what each IR node becomes, and what is refused.

NIR spikes are binary, while an IR population sends ``out_scale`` (λ) per spike. The exporter
tracks, for every IR node, the *worth* of one NIR unit of its output in ANN units (1 for the input
and for synapse outputs, λ for a population, λ/k² after a k×k ``SumPool2d``) and folds it into the
weights of the next ``Affine``/``Linear``/``Conv2d`` (W·worth), so every current reaching a neuron
is in ANN units and the thresholds stay θ = λ. Mapping:

* ``Input`` → ``Input``; ``Readout`` → ``Output`` fed by the last synapse (a consumer obtains the
  prediction at step t as the sum of the Output over steps 1..t divided by t);
* ``Dense`` → ``Affine`` (``Linear`` without bias); ``Conv`` → ``Conv2d`` (symmetric pads; a
  grouped convolution as its block-diagonal groups = 1 equivalent, because nir 1.0.8's reader
  rejects grouped ``Conv2d`` nodes);
* ``AvgPool`` → ``SumPool2d`` with 1/k² folded into the next weights (``pool="sum"``, default) or
  ``AvgPool2d`` (``pool="avg"``);
* a flattening ``Reshape`` → ``Flatten(start_dim=0, end_dim=-1)`` with per-sample shapes: NIR
  types carry no batch axis, so dims count from the first per-sample axis (a PyTorch consumer
  adds 1 for its batch axis);
* ``IF`` → ``IF(r, v_threshold=θ, v_reset=0)`` per neuron (``reset="zero"``, default; r = 1
  unless the input arrives in other units), or, with ``reset="exact"``, the soft-reset loop
  ``I(r) → Threshold(θ) → Scale(−θ/r) → I``; a population's bias is folded into the bias of the
  synapse feeding it;
* ``Add`` → nothing: its inputs become fan-in edges of its consumer (NIR sums all edges into a
  node); inputs of different worth are first brought to ANN units by a 1×1 depthwise ``Conv2d``
  (or a diagonal ``Linear``) named ``<add>.scale<i>``;
* ``Concat`` → nothing: its consumer (a ``Conv2d`` with groups = 1 or an ``Affine`` behind a
  flatten) is split into one node per concatenated input, ``<consumer>.part<i>``, whose outputs
  fan into the consumer's consumer.

Everything else (max pooling, channel permutation, padding, non-zero v0, asymmetric pads …) is
refused by name. The graph metadata records one NIR time unit = one step, the true reset mode,
the scales and the onnx2snn version, plus (key ``onnx2snn``, JSON) what ``restore_ir`` needs to
rebuild the exact IR graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnx2snn import __version__
from onnx2snn.errors import BackendError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Add, AvgPool, Concat, Conv, Dense, Input, Node, Reshape
from onnx2snn.ir.spiking import IF, Readout

NIR_RESET_MODES = ("zero", "exact")
NIR_POOL_MODES = ("sum", "avg")
METADATA_KEY = "onnx2snn"


def nir_name(ir_name: str) -> str:
    """A NIR node name for an IR node name: HDF5 reads '/' as a group separator."""
    name = ir_name.strip("/").replace("/", ".")
    return name or "node"


def _arr(a: np.ndarray | float, dtype: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64).astype(dtype))


def _json_array(a: np.ndarray | None) -> Any:
    return None if a is None else {"shape": list(a.shape), "data": np.asarray(a, np.float64)
                                   .reshape(-1).tolist()}


@dataclass
class _Builder:
    graph: Graph
    reset: str
    pool: str
    dtype: Any
    nodes: dict[str, Any] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    producers: dict[str, list[str]] = field(default_factory=dict)
    worth: dict[str, np.ndarray] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # NIR name -> IR name
    problems: list[str] = field(default_factory=list)
    inserted: dict[str, str] = field(default_factory=dict)
    bias_into: dict[str, np.ndarray] = field(default_factory=dict)
    bias_folded: dict[str, str] = field(default_factory=dict)
    split: dict[str, list[str]] = field(default_factory=dict)

    # -- helpers ---------------------------------------------------------------------------
    def refuse(self, n: Node, why: str) -> None:
        where = f" (ONNX {', '.join(n.origin)})" if n.origin else ""
        self.problems.append(f"{n.kind} node {n.name!r}{where}: {why}")

    def add_node(self, name: str, node: Any, ir_name: str | None = None) -> str:
        base, k = name, 1
        while name in self.nodes:
            name, k = f"{base}_{k}", k + 1
        self.nodes[name] = node
        if ir_name is not None:
            self.names[name] = ir_name
        return name

    def connect(self, srcs: list[str], dst: str) -> None:
        for s in srcs:
            if (s, dst) in self.edges:
                raise BackendError(f"NIR cannot hold two edges {s} -> {dst} (the network adds a "
                                   "tensor to itself)")
            self.edges.append((s, dst))

    def full_worth(self, name: str) -> np.ndarray:
        return np.broadcast_to(self.worth[name], self.graph[name].shape)

    def channel_worth(self, name: str, user: Node) -> np.ndarray | None:
        """The worth of ``name``'s output per channel, or None (refused) if it varies in space."""
        w = self.full_worth(name)
        c = w.reshape(w.shape[0], -1)
        if not np.all(c == c[:, :1]):
            self.refuse(user, f"its input {name!r} has per-neuron scales that vary across space; "
                              "they cannot be folded into convolution or pooling weights")
            return None
        return c[:, 0].copy()

    def scale_to_ann(self, src: str, name: str) -> list[str]:
        """Producers of ``src`` brought to ANN units (worth 1) by an inserted scaling synapse."""
        w = self.full_worth(src)
        if np.all(w == 1.0):
            return self.producers[src]
        shape = self.graph[src].shape
        import nir

        if len(shape) == 3:  # a 1x1 convolution with a diagonal weight (groups = 1: portable)
            c = self.channel_worth(src, self.graph[src])
            if c is None:
                return self.producers[src]
            node = nir.Conv2d(input_shape=tuple(shape[1:]),
                              weight=_arr(np.diag(c)[:, :, None, None], self.dtype), stride=1,
                              padding=0, dilation=1, groups=1,
                              bias=_arr(np.zeros(shape[0]), self.dtype))
        else:
            flat = w.reshape(-1)
            node = nir.Linear(weight=_arr(np.diag(flat), self.dtype))
        added = self.add_node(nir_name(name), node)
        self.inserted[added] = src
        self.connect(self.producers[src], added)
        return [added]

    # -- the walk --------------------------------------------------------------------------
    def build(self) -> None:
        self.plan_biases()
        consumers = self.graph.consumers()
        for n in self.graph.nodes:
            try:
                self.visit(n, consumers)
            except _Refused:
                self.producers[n.name] = []
                self.worth[n.name] = np.ones(())

    def plan_biases(self) -> None:
        consumers = self.graph.consumers()
        for p in self.graph.nodes:
            if not isinstance(p, IF) or p.bias is None or not np.any(p.bias):
                continue
            q = self.graph[p.inputs[0]]
            cands = [q] if not isinstance(q, Add) or consumers[q.name] != [p.name] else \
                [self.graph[i] for i in q.inputs]
            target = next((c for c in cands if isinstance(c, (Dense, Conv))
                           and consumers[c.name] in ([p.name], [q.name])), None)
            bias = np.broadcast_to(p.bias, p.shape)
            if target is None:
                self.refuse(p, "has a bias and no synapse of its own to carry it (NIR neurons "
                               "have no bias)")
                continue
            if isinstance(target, Conv):
                per = bias.reshape(bias.shape[0], -1)
                if not np.all(per == per[:, :1]):
                    self.refuse(p, "has a per-neuron bias that a convolution's per-channel bias "
                                   "cannot carry")
                    continue
                bias = per[:, 0]
            self.bias_into[target.name] = np.asarray(bias, np.float64)
            self.bias_folded[target.name] = p.name

    def visit(self, n: Node, consumers: dict[str, list[str]]) -> None:
        import nir

        name = nir_name(n.name)
        if isinstance(n, Input):
            self.producers[n.name] = [self.add_node(name, nir.Input(np.array(n.shape)), n.name)]
            self.worth[n.name] = np.ones(())
        elif isinstance(n, Dense):
            self.dense(n, name)
        elif isinstance(n, Conv):
            self.conv(n, name)
        elif isinstance(n, AvgPool) and type(n) is AvgPool:
            self.avgpool(n, name)
        elif isinstance(n, Reshape):
            self.reshape(n, name)
        elif isinstance(n, IF):
            self.population(n, name)
        elif isinstance(n, Add):
            self.add(n)
        elif isinstance(n, Concat):
            self.concat(n, consumers)
        elif isinstance(n, Readout):
            srcs = self.scale_to_ann(n.inputs[0], f"{n.name}.scale")
            out = self.add_node(name, nir.Output(np.array(n.shape)), n.name)
            self.connect(srcs, out)
            self.producers[n.name] = [out]
            self.worth[n.name] = np.ones(())
        else:
            hint = {"maxpool_gate": "NIR has no max pooling: convert with --maxpool avg",
                    "maxpool": "NIR has no max pooling: convert with --maxpool avg",
                    "channel_permute": "NIR has no channel permutation",
                    "transpose": "a channels-last input: NIR has no permutation; re-export the "
                                 "model with an NCHW input (docs/exporters.md)",
                    "pad": "NIR has no padding node (only a convolution's symmetric padding)",
                    "affine": "NIR has no per-channel affine map between synapses"}
            self.refuse(n, hint.get(n.kind, f"node kind {n.kind!r} has no NIR form"))
            raise _Refused

    def _input_worth(self, n: Node) -> np.ndarray:
        return self.full_worth(n.inputs[0])

    def dense(self, n: Dense, name: str) -> None:
        import nir

        w_in = self._input_worth(n).reshape(-1)
        weight = n.weight.astype(np.float64) * w_in[None, :]
        bias = None if n.bias is None else n.bias.astype(np.float64)
        if n.name in self.bias_into:
            bias = (0.0 if bias is None else bias) + self.bias_into[n.name]
        parts = self.split.get(n.inputs[0])
        node = (nir.Linear(weight=_arr(weight, self.dtype)) if bias is None
                else nir.Affine(weight=_arr(weight, self.dtype), bias=_arr(bias, self.dtype)))
        if parts is None:
            out = self.add_node(name, node, n.name)
            self.connect(self.producers[n.inputs[0]], out)
            self.producers[n.name] = [out]
        else:
            self.producers[n.name] = self.split_linear(n, name, weight, bias, parts)
        self.worth[n.name] = np.ones(())

    def conv(self, n: Conv, name: str) -> None:
        import nir

        t, left, b, r = n.pads
        if (t, left) != (b, r):
            self.refuse(n, f"asymmetric padding {n.pads} (NIR's Conv2d pads both sides equally): "
                           "export the model with symmetric pads")
            raise _Refused
        src = n.inputs[0]
        c = self.channel_worth(src, n)
        if c is None:
            raise _Refused
        o, cg = n.weight.shape[:2]
        cidx = (np.arange(o) // (o // n.groups))[:, None] * cg + np.arange(cg)[None, :]
        weight = n.weight.astype(np.float64) * c[cidx][:, :, None, None]
        bias = np.zeros(o) if n.bias is None else n.bias.astype(np.float64)
        if n.name in self.bias_into:
            bias = bias + self.bias_into[n.name]
        parts = self.split.get(src)
        if parts is not None:
            if n.groups != 1:
                self.refuse(n, "a grouped convolution of a Concat cannot be split per input")
                raise _Refused
            offs = np.cumsum([0] + [self.graph[p].shape[0] for p in parts])
            outs = []
            for i, p in enumerate(parts):
                part = nir.Conv2d(input_shape=tuple(self.graph[p].shape[1:]),
                                  weight=_arr(weight[:, offs[i]:offs[i + 1]], self.dtype),
                                  stride=tuple(n.strides), padding=(t, left),
                                  dilation=tuple(n.dilations), groups=1,
                                  bias=_arr(bias if i == 0 else np.zeros(o), self.dtype))
                pname = self.add_node(f"{name}.part{i}", part)
                self.inserted[pname] = n.name
                self.connect(self.producers[p], pname)
                outs.append(pname)
            self.producers[n.name] = outs
        else:
            # nir 1.0.8 takes a Conv2d's input channels from weight.shape[1], ignoring groups, so
            # nir.read refuses every file with a grouped Conv2d: write it as the equivalent
            # groups = 1 convolution with a block-diagonal weight (restore_ir regroups it).
            node = nir.Conv2d(input_shape=tuple(self.graph[src].shape[1:]),
                              weight=_arr(_ungroup(weight, n.groups), self.dtype),
                              stride=tuple(n.strides), padding=(t, left),
                              dilation=tuple(n.dilations), groups=1, bias=_arr(bias, self.dtype))
            out = self.add_node(name, node, n.name)
            self.connect(self.producers[src], out)
            self.producers[n.name] = [out]
        self.worth[n.name] = np.ones(())

    def avgpool(self, n: AvgPool, name: str) -> None:
        import nir

        t, left, b, r = n.pads
        if (t, left) != (b, r):
            self.refuse(n, f"asymmetric padding {n.pads}")
            raise _Refused
        if any(n.pads) and not n.count_include_pad:
            self.refuse(n, "padded average pooling that excludes the padding divides edge "
                           "windows by fewer cells: no uniform NIR pool expresses it")
            raise _Refused
        src = n.inputs[0]
        in_hw = self.graph[src].shape[1:]
        floor = tuple((in_hw[i] + 2 * n.pads[i] - n.kernel[i]) // n.strides[i] + 1 for i in (0, 1))
        if floor != tuple(n.shape[1:]):
            self.refuse(n, "ceil_mode pooling has a partial last window; NIR pools floor")
            raise _Refused
        c = self.channel_worth(src, n)
        if c is None:
            raise _Refused
        k = float(n.kernel[0] * n.kernel[1])
        args = {"kernel_size": np.array(n.kernel), "stride": np.array(n.strides),
                "padding": np.array((t, left))}
        if self.pool == "sum":
            node: Any = nir.SumPool2d(**args)
            self.worth[n.name] = (c / k).reshape(-1, 1, 1)
        else:
            node = nir.AvgPool2d(**args)
            self.worth[n.name] = c.reshape(-1, 1, 1)
        out = self.add_node(name, node, n.name)
        self.connect(self.producers[src], out)
        self.producers[n.name] = [out]

    def reshape(self, n: Reshape, name: str) -> None:
        import nir

        src = n.inputs[0]
        s = self.graph[src].shape
        if len(n.shape) != 1:
            self.refuse(n, f"reshape {s} -> {n.shape} is not a flatten; NIR has only Flatten")
            raise _Refused
        self.worth[n.name] = self.full_worth(src).reshape(-1)
        if len(s) == 1:  # (F,) -> (F,): nothing to write
            self.producers[n.name] = self.producers[src]
            return
        if src in self.split:
            self.split[n.name] = self.split[src]
            self.producers[n.name] = []
            return
        out = self.add_node(name, nir.Flatten(input_type={"input": np.array(s)}, start_dim=0,
                                              end_dim=-1), n.name)
        self.connect(self.producers[src], out)
        self.producers[n.name] = [out]

    def population(self, n: IF, name: str) -> None:
        import nir

        if np.any(n.v0 != 0):
            self.refuse(n, "starts at v0 != 0 and NIR neurons have no initial state: convert "
                           "with --v0 zero")
            raise _Refused
        src = n.inputs[0]
        r = np.broadcast_to(self._input_worth(n), n.shape).astype(np.float64)
        theta = np.broadcast_to(n.threshold, n.shape).astype(np.float64)
        if self.reset == "zero":
            out = self.add_node(name, nir.IF(r=_arr(r, self.dtype),
                                             v_threshold=_arr(theta, self.dtype),
                                             v_reset=_arr(np.zeros(n.shape), self.dtype)), n.name)
            self.connect(self.producers[src], out)
        else:
            v = self.add_node(f"{name}.v", nir.I(r=_arr(r, self.dtype)))
            out = self.add_node(name, nir.Threshold(threshold=_arr(theta, self.dtype)), n.name)
            back = self.add_node(f"{name}.reset", nir.Scale(scale=_arr(-theta / r, self.dtype)))
            self.connect(self.producers[src], v)
            self.edges += [(v, out), (out, back), (back, v)]
        self.producers[n.name] = [out]
        self.worth[n.name] = np.asarray(n.out_scale, np.float64)

    def add(self, n: Add) -> None:
        worths = [self.full_worth(i) for i in n.inputs]
        if all(np.array_equal(w, worths[0]) for w in worths[1:]):
            self.producers[n.name] = [p for i in n.inputs for p in self.producers[i]]
            self.worth[n.name] = worths[0]
            return
        prods: list[str] = []
        for k, i in enumerate(n.inputs):
            prods += self.scale_to_ann(i, f"{n.name}.scale{k}")
        self.producers[n.name] = prods
        self.worth[n.name] = np.ones(())

    def concat(self, n: Concat, consumers: dict[str, list[str]]) -> None:
        users = [self.graph[c] for c in consumers[n.name]]
        ok = n.axis == 0 and len(users) == 1 and (
            isinstance(users[0], Conv)
            or (isinstance(users[0], Reshape) and len(users[0].shape) == 1
                and all(isinstance(self.graph[u], Dense)
                        for u in consumers[users[0].name])))
        if not ok:
            self.refuse(n, "NIR has no Concat: it is expressible only as the input of one "
                           "convolution (groups = 1) or of dense layers behind a flatten, whose "
                           "weights are split per input")
            raise _Refused
        self.split[n.name] = list(n.inputs)
        self.producers[n.name] = []
        parts = [np.broadcast_to(self.worth[i], self.graph[i].shape) for i in n.inputs]
        self.worth[n.name] = np.concatenate(parts, axis=0)

    def split_linear(self, n: Dense, name: str, weight: np.ndarray, bias: np.ndarray | None,
                     parts: list[str]) -> list[str]:
        import nir

        outs, off = [], 0
        for i, p in enumerate(parts):
            s = self.graph[p].shape
            size = int(np.prod(s))
            w = _arr(weight[:, off:off + size], self.dtype)
            off += size
            srcs = self.producers[p]
            if len(s) > 1:
                flat = self.add_node(f"{name}.flat{i}",
                                     nir.Flatten(input_type={"input": np.array(s)}, start_dim=0,
                                                 end_dim=-1))
                self.inserted[flat] = n.name
                self.connect(srcs, flat)
                srcs = [flat]
            node = (nir.Affine(weight=w, bias=_arr(bias, self.dtype))
                    if bias is not None and i == 0 else nir.Linear(weight=w))
            pname = self.add_node(f"{name}.part{i}", node)
            self.inserted[pname] = n.name
            self.connect(srcs, pname)
            outs.append(pname)
        return outs


def _ungroup(weight: np.ndarray, groups: int) -> np.ndarray:
    """(O, C/G, kh, kw) grouped weight -> the (O, C, kh, kw) weight of the same convolution."""
    if groups == 1:
        return weight
    o, cg = weight.shape[:2]
    full = np.zeros((o, cg * groups) + weight.shape[2:], weight.dtype)
    per = o // groups
    for g in range(groups):
        full[g * per:(g + 1) * per, g * cg:(g + 1) * cg] = weight[g * per:(g + 1) * per]
    return full


def regroup(weight: np.ndarray, groups: int) -> np.ndarray:
    """Inverse of ``_ungroup``: the diagonal blocks of a block-diagonal weight."""
    if groups == 1:
        return weight
    o, c = weight.shape[:2]
    per, cg = o // groups, c // groups
    return np.concatenate([weight[g * per:(g + 1) * per, g * cg:(g + 1) * cg]
                           for g in range(groups)])


class _Refused(Exception):
    """Internal: a node was refused (its problem is recorded); skip what depends on it."""


def _true_reset(graph: Graph) -> str:
    modes = sorted({n.reset for n in graph.nodes if isinstance(n, IF)})
    return modes[0] if len(modes) == 1 else ",".join(modes) or "none"


def check_nir(graph: Graph, reset: str = "zero", pool: str = "sum") -> list[str]:
    """Everything in ``graph`` NIR cannot express, one line per node, naming it."""
    b = _Builder(graph, _mode(reset, NIR_RESET_MODES, "reset"), _mode(pool, NIR_POOL_MODES, "pool"),
                 np.float32)
    b.build()
    return b.problems


def _mode(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise BackendError(f"NIR {what} mode {value!r}: choose one of {', '.join(allowed)}")
    return value


def to_nir(graph: Graph, reset: str = "zero", pool: str = "sum", dtype: Any = np.float32) -> Any:
    """The ``nir.NIRGraph`` of an SNN graph; ``BackendError`` listing every node NIR cannot express.

    ``reset``: ``zero`` (NIR ``IF``, reset to 0; the default every consumer reads) or ``exact``
    (reset by subtraction as I → Threshold → Scale(−θ) → I). ``pool``: ``sum`` (``SumPool2d``,
    1/k² folded into the next weights) or ``avg`` (``AvgPool2d``). ``dtype`` of the arrays written.
    """
    import nir

    b = _Builder(graph, _mode(reset, NIR_RESET_MODES, "reset"), _mode(pool, NIR_POOL_MODES, "pool"),
                 dtype)
    b.build()
    if b.problems:
        raise BackendError("the nir target cannot express this network:\n  "
                           + "\n  ".join(b.problems))
    true_reset = _true_reset(graph)
    pops = {n.name: {"threshold": _json_array(n.threshold), "out_scale": _json_array(n.out_scale),
                     "v0": _json_array(n.v0), "bias": _json_array(n.bias), "reset": n.reset}
            for n in graph.nodes if isinstance(n, IF)}
    restore = {
        "format": 1,
        "names": b.names,
        "order": [n.name for n in graph.nodes],
        "kinds": {n.name: n.kind for n in graph.nodes},
        "inputs": {n.name: list(n.inputs) for n in graph.nodes},
        "origin": {n.name: list(n.origin) for n in graph.nodes if n.origin},
        "outputs": list(graph.outputs),
        "populations": pops,
        "avgpool": {n.name: {"count_include_pad": bool(n.count_include_pad),
                             "ceil_mode": bool(n.ceil_mode), "pads": list(n.pads)}
                    for n in graph.nodes if type(n) is AvgPool},
        "conv_pads": {n.name: list(n.pads) for n in graph.nodes if isinstance(n, Conv)},
        "conv_groups": {n.name: n.groups for n in graph.nodes if isinstance(n, Conv)},
        "dense_bias": {n.name: n.bias is not None for n in graph.nodes if isinstance(n, Dense)},
        "conv_bias": {n.name: n.bias is not None for n in graph.nodes if isinstance(n, Conv)},
        "dtypes": {n.name: str(n.weight.dtype) for n in graph.nodes
                   if isinstance(n, (Dense, Conv))},
        "inserted": b.inserted,
        "bias_folded": b.bias_folded,
        "meta": json.loads(json.dumps(dict(graph.meta), default=str)),
    }
    scales = {k: (v["out_scale"]["data"][0] if len(v["out_scale"]["data"]) == 1
                  else f"{len(v['out_scale']['data'])} values") for k, v in pops.items()}
    metadata = {
        "generator": f"onnx2snn {__version__}",
        "onnx2snn_version": __version__,
        "dt": 1.0,
        "time_unit": "one NIR time unit = one simulation step (dt = 1, r = 1)",
        "reset": true_reset,
        "nir_reset": ("zero: IF resets to v_reset = 0; the converted network resets by "
                      f"{true_reset}" if reset == "zero" else
                      "exact: reset by subtraction as I -> Threshold -> Scale(-theta) -> I"),
        "pool": pool,
        "spikes": "binary; the worth of a spike (the scale of its population) is folded into "
                  "the weights of the next synapse",
        "readout": "prediction at step t = (sum of the Output over steps 1..t) / t, argmax for "
                   "classes",
        "flatten": "start_dim/end_dim count per-sample dimensions (no batch axis)",
        "scales": json.dumps(scales),
        METADATA_KEY: json.dumps(restore),
    }
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata=metadata)


__all__ = ["METADATA_KEY", "NIR_POOL_MODES", "NIR_RESET_MODES", "check_nir", "nir_name", "to_nir"]
