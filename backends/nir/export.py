"""SNN graph → ``nir.NIRGraph`` (DESIGN.md §6): what each IR node becomes, and what is refused.

NIR spikes are binary, while an IR population sends ``out_scale`` (λ) per spike. The exporter
tracks, for every IR node, the *worth* of one NIR unit of its output in ANN units (1 for the input
and for synapse outputs, λ for a population, λ/k² after a k×k ``SumPool2d``) and folds it into the
weights of the next ``Affine``/``Conv2d`` (W·worth), so every current reaching a neuron is in ANN
units and the thresholds stay θ = λ. The file holds only what the released consumers read
(docs/nir.md, measured by ``tools/nir_consumers.py``). Mapping:

* ``Input`` → ``Input``; ``Readout`` → ``Output`` fed by the last synapse (a consumer obtains the
  prediction at step t as the sum of the Output over steps 1..t divided by t);
* ``Dense`` → on a (C, H, W) input (a flatten absorbed, or an earlier layer's (F, 1, 1)) a
  ``Conv2d`` whose kernel covers the input, giving (F, 1, 1); on a 1-D input an ``Affine`` (with
  a zero bias if none: Sinabs maps no ``Linear``). ``Conv`` → ``Conv2d`` (symmetric pads; a
  grouped convolution as its block-diagonal groups = 1 equivalent, because nir 1.0.8's reader
  rejects grouped ``Conv2d`` nodes);
* ``AvgPool`` → ``SumPool2d`` with 1/k² folded into the next weights (``pool="sum"``, default) or
  ``AvgPool2d`` (``pool="avg"``);
* a flattening ``Reshape`` → nothing (no ``Flatten``: snnTorch and Norse pass its per-sample
  ``start_dim`` to ``torch.nn.Flatten``, which then flattens the batch; spyx flattens
  channels-last); its consumers read the unflattened NIR shape (``_Builder.shapes``);
* ``IF`` → ``IF(r, v_threshold=θ)`` per neuron (``reset="zero"``, default; r = 1 unless the input
  arrives in other units; ``v_reset = 0`` is written by nir and removed by ``write_nir``), for
  ``form="snntorch"`` a non-leaking ``LIF`` in snnTorch's dt = 1e-4, or, with ``reset="exact"``,
  the soft-reset loop ``I(r) → Threshold(θ) → Scale(−θ/r) → I``; a population's bias is folded
  into the bias of the synapse feeding it;
* ``Add`` → nothing: its inputs become fan-in edges of its consumer (NIR sums all edges into a
  node); inputs of different worth are first brought to ANN units by a 1×1 depthwise ``Conv2d``
  (or a diagonal ``Affine``) named ``<add>_scale<i>``;
* ``Concat`` → nothing: its consumer (a ``Conv2d`` with groups = 1 or a fully connected layer
  behind a flatten) is split into one node per concatenated input, ``<consumer>_part<i>``, whose
  outputs fan into the consumer's consumer.

Node names hold no ``.`` and sort topologically (``input``, ``n01_…``, …, ``output``): see
``_Builder.portable_names``. Everything else (max pooling, channel permutation, padding, non-zero
v0, asymmetric pads …) is refused by name, and so is what the consumer a ``form`` names would run
wrongly. The graph metadata records the time unit, which nir version's ``IF`` the file means
(``if_reset``, ``if_semantics``), the true reset mode, the scales and the onnx2snn version, plus
(key ``onnx2snn``, JSON) what ``restore_ir`` needs to rebuild the exact IR graph.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnx2snn import __version__
from onnx2snn.backends import cannot_express
from onnx2snn.errors import BackendError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Add, AvgPool, Concat, Conv, Dense, Input, Node, Reshape
from onnx2snn.ir.spiking import IF, Readout

NIR_RESET_MODES = ("zero", "exact")
NIR_POOL_MODES = ("sum", "avg")
NIR_FORMS = ("generic", "sinabs", "snntorch", "norse", "spyx")
# The snntorch form: snnTorch's importer assumes dt = 1e-4 s per step; tau in the same unit.
SNNTORCH_DT = 1e-4
SNNTORCH_TAU = 1e4
# What an IF node of each form means, written into the file's metadata ("if_semantics").
_IF_NIR_108 = ("nir 1.0.8: IF(r, v_threshold) resets to v_reset, left out of the file because it "
               "is 0 (nir 1.0.8 reads a missing v_reset as 0); nir 1.0.4 readers (Sinabs) read "
               "the same IF as reset by subtraction")
IF_SEMANTICS = {
    "generic": _IF_NIR_108, "norse": _IF_NIR_108, "spyx": _IF_NIR_108,
    "sinabs": "nir 1.0.4: IF(r, v_threshold) resets by subtraction (v -= v_threshold), the "
              "converted network's own reset; no v_reset is written (nir 1.0.8 would read the "
              "file as reset to 0)",
    "snntorch": "no IF: each population is a LIF with v_leak = 0, tau = 1e4 and r = tau/dt in "
                "snnTorch's time unit dt = 1e-4 (leak 1e-8 per step), reset to v_reset = 0",
}
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
    form: str = "generic"
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
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # NIR-side output shapes
    part_shape: tuple[int, ...] = ()

    # -- helpers ---------------------------------------------------------------------------
    def refuse(self, n: Node, why: str) -> None:
        where = f" (ONNX {', '.join(n.origin)})" if n.origin else ""
        self.problems.append(f"{n.kind} node {n.name!r}{where}: {why}")

    def nshape(self, name: str) -> tuple[int, ...]:
        """The per-sample shape of IR node ``name``'s output as written in NIR: the IR shape, or
        (F, 1, 1) / the unflattened (C, H, W) where a flatten was absorbed into convolutions."""
        return self.shapes.get(name, tuple(self.graph[name].shape))

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
        shape = self.nshape(src)
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
            node = nir.Affine(weight=_arr(np.diag(flat), self.dtype),
                              bias=_arr(np.zeros(flat.size), self.dtype))
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

    def portable_names(self) -> None:
        """Rename every node so that names hold no ``.`` and sort topologically.

        ``nir.read`` returns nodes in alphabetical order and nirtorch 2.0.2 (Sinabs) gives up on
        nodes out of topological order; torch module names cannot hold ``.``, which nirtorch,
        snnTorch and spyx also read as a sub-graph path. So: ``input`` (spyx starts its walk at
        a node of that name), ``n<k>_<ir name>`` in the order written, then ``output``.
        """
        body = [k for k, v in self.nodes.items() if type(v).__name__ not in ("Input", "Output")]
        width = max(2, len(str(len(body))))
        new: dict[str, str] = {}
        for kind, pool in (("Input", "input"), ("Output", "output")):
            ends = [k for k, v in self.nodes.items() if type(v).__name__ == kind]
            new.update({k: pool if i == 0 else f"{pool}_{i}" for i, k in enumerate(ends)})
        for i, k in enumerate(body, 1):
            slug = "_".join(p for p in re.split(r"[^A-Za-z0-9]+", k) if p)
            new[k] = f"n{i:0{width}d}_{slug}" if slug else f"n{i:0{width}d}"
        self.nodes = {new[k]: v for k, v in self.nodes.items()}
        self.edges = [(new[a], new[b]) for a, b in self.edges]
        self.names = {new[k]: v for k, v in self.names.items()}
        self.inserted = {new[k]: v for k, v in self.inserted.items()}

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
            out = self.add_node(name, nir.Output(np.array(self.nshape(n.inputs[0]))), n.name)
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
        w_in = self._input_worth(n).reshape(-1)
        weight = n.weight.astype(np.float64) * w_in[None, :]
        bias = np.zeros(weight.shape[0]) if n.bias is None else n.bias.astype(np.float64)
        if n.name in self.bias_into:
            bias = bias + self.bias_into[n.name]
        parts = self.split.get(n.inputs[0])
        if parts is None:
            node, self.shapes[n.name] = self.fully_connected(weight, bias,
                                                             self.nshape(n.inputs[0]))
            out = self.add_node(name, node, n.name)
            self.connect(self.producers[n.inputs[0]], out)
            self.producers[n.name] = [out]
        else:
            self.producers[n.name] = self.split_linear(n, name, weight, bias, parts)
            self.shapes[n.name] = self.part_shape
        self.worth[n.name] = np.ones(())

    def fully_connected(self, weight: np.ndarray, bias: np.ndarray,
                        in_shape: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
        """A fully connected layer as NIR writes it portably, and its output shape.

        A (C, H, W) input (a flatten absorbed, or the (F, 1, 1) output of an earlier layer)
        takes a ``Conv2d`` whose kernel covers the whole input, giving (O, 1, 1): the same
        sums without a ``Flatten`` (whose per-sample ``start_dim`` snnTorch and Norse pass to
        ``torch.nn.Flatten`` unchanged, flattening the batch; spyx flattens channels-last). A
        1-D input takes an ``Affine`` (always with a bias: Sinabs maps no ``Linear``).
        """
        import nir

        o = weight.shape[0]
        if len(in_shape) == 3:
            kernel = weight.reshape((o,) + tuple(in_shape))
            node = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=_arr(kernel, self.dtype),
                              stride=1, padding=0, dilation=1, groups=1,
                              bias=_arr(bias, self.dtype))
            return node, (o, 1, 1)
        return nir.Affine(weight=_arr(weight, self.dtype), bias=_arr(bias, self.dtype)), (o,)

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
        """A flatten writes nothing: its consumers (fully connected layers, neurons, the
        readout) work on the unflattened NIR shape, recorded in ``shapes``."""
        src = n.inputs[0]
        s = self.graph[src].shape
        if len(n.shape) != 1:
            self.refuse(n, f"reshape {s} -> {n.shape} is not a flatten; NIR has only Flatten")
            raise _Refused
        self.worth[n.name] = self.full_worth(src).reshape(-1)
        self.shapes[n.name] = self.nshape(src)
        if src in self.split:
            self.split[n.name] = self.split[src]
            self.producers[n.name] = []
            return
        self.producers[n.name] = self.producers[src]

    def population(self, n: IF, name: str) -> None:
        import nir

        if np.any(n.v0 != 0):
            self.refuse(n, "starts at v0 != 0 and NIR neurons have no initial state: convert "
                           "with --v0 zero")
            raise _Refused
        src = n.inputs[0]
        shape = self.nshape(src)
        self.shapes[n.name] = shape
        r = np.broadcast_to(self._input_worth(n), n.shape).astype(np.float64).reshape(shape)
        theta = np.broadcast_to(n.threshold, n.shape).astype(np.float64).reshape(shape)
        if self.reset == "zero" and self.form == "snntorch":
            if np.unique(theta).size > 1 or np.unique(r).size > 1:
                self.refuse(n, "has per-neuron thresholds or input scales, and snnTorch maps "
                               "one threshold per population: convert without channel-wise "
                               "scales, or write --nir-for generic")
                raise _Refused
            # snnTorch reads IF as a leaky neuron (beta 0.9) that returns a (spike, membrane)
            # tuple; its LIF, read with dt = 1e-4, is IF with reset to zero when tau is huge:
            # beta = 1 - dt/tau rounds to 1, and r = tau/dt keeps the input gain r·dt/tau = 1.
            out = self.add_node(name, nir.LIF(
                tau=_arr(np.full(shape, SNNTORCH_TAU), self.dtype),
                r=_arr(r * SNNTORCH_TAU / SNNTORCH_DT, self.dtype),
                v_leak=_arr(np.zeros(shape), self.dtype), v_threshold=_arr(theta, self.dtype),
                v_reset=_arr(np.zeros(shape), self.dtype)), n.name)
            self.connect(self.producers[src], out)
        elif self.reset == "zero":
            out = self.add_node(name, nir.IF(r=_arr(r, self.dtype),
                                             v_threshold=_arr(theta, self.dtype),
                                             v_reset=_arr(np.zeros(shape), self.dtype)), n.name)
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
        self.shapes[n.name] = self.nshape(n.inputs[0])
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

    def split_linear(self, n: Dense, name: str, weight: np.ndarray, bias: np.ndarray,
                     parts: list[str]) -> list[str]:
        """One fully connected node per concatenated input, all fanning into the consumer."""
        dims = {len(self.nshape(p)) == 3 for p in parts}
        if len(dims) > 1:
            self.refuse(n, "concatenates flat and (C, H, W) inputs: their parts would reach the "
                           "next node in different shapes")
            raise _Refused
        outs, off = [], 0
        for i, p in enumerate(parts):
            size = int(np.prod(self.graph[p].shape))
            node, self.part_shape = self.fully_connected(
                weight[:, off:off + size], bias if i == 0 else np.zeros_like(bias),
                self.nshape(p))
            off += size
            pname = self.add_node(f"{name}.part{i}", node)
            self.inserted[pname] = n.name
            self.connect(self.producers[p], pname)
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


def _build(graph: Graph, reset: str, pool: str, form: str, dtype: Any) -> _Builder:
    b = _Builder(graph, _mode(reset, NIR_RESET_MODES, "reset"), _mode(pool, NIR_POOL_MODES, "pool"),
                 dtype, _mode(form, NIR_FORMS, "consumer form (--nir-for)"))
    b.build()
    b.problems += _form_problems(b)
    return b


def _form_problems(b: _Builder) -> list[str]:
    """What the released consumer ``b.form`` names would not run the way the file means it."""
    if b.form == "generic" or b.problems:
        return []
    if b.reset == "exact":
        return [f"--nir-for {b.form}: {b.form} maps no I / Threshold / Scale node, so it cannot "
                "read the exact reset loop; use --nir-reset zero"]
    fan_out = sorted({a for a, _ in b.edges if sum(e[0] == a for e in b.edges) > 1})
    fan_in = sorted({d for _, d in b.edges if sum(e[1] == d for e in b.edges) > 1})
    why = {"spyx": "spyx 1.0 walks the graph from 'input' along each node's first out-edge "
                   "only, so it would drop the other branches",
           "sinabs": "nirtorch 2.0.2 (Sinabs 3.1) runs nodes in depth-first pre-order, so a "
                     "node that sums two branches runs before one of them has"}
    if b.form in why and (fan_out or fan_in):
        where = ", ".join(b.names.get(k, b.inserted.get(k, k)) for k in fan_out or fan_in)
        return [f"--nir-for {b.form}: the network branches (at {where}) and {why[b.form]}; "
                "write --nir-for generic for another consumer"]
    return []


def check_nir(graph: Graph, reset: str = "zero", pool: str = "sum",
              form: str = "generic") -> list[str]:
    """Everything in ``graph`` NIR (or the consumer ``form`` names) cannot express, one line
    per node, naming it."""
    return _build(graph, reset, pool, form, np.float32).problems


def _mode(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise BackendError(f"NIR {what} mode {value!r}: choose one of {', '.join(allowed)}")
    return value


def to_nir(graph: Graph, reset: str = "zero", pool: str = "sum", dtype: Any = np.float32,
           form: str = "generic") -> Any:
    """The ``nir.NIRGraph`` of an SNN graph; ``BackendError`` listing every node NIR cannot express.

    ``reset``: ``zero`` (NIR ``IF``, reset to 0; the default every consumer reads) or ``exact``
    (reset by subtraction as I → Threshold → Scale(−θ) → I). ``pool``: ``sum`` (``SumPool2d``,
    1/k² folded into the next weights) or ``avg`` (``AvgPool2d``). ``dtype`` of the arrays written.
    ``form``: the consumer the file is written for (``NIR_FORMS``; docs/nir.md): ``generic``
    and ``norse``/``spyx`` write ``IF`` for nir 1.0.8 (reset to 0); ``sinabs`` the same nodes,
    declared for nir 1.0.4 (``IF`` resets by subtraction); ``snntorch`` a non-leaking ``LIF``
    in snnTorch's time unit (dt = 1e-4).
    """
    import nir

    b = _build(graph, reset, pool, form, dtype)
    if b.problems:
        raise cannot_express("nir", b.problems)
    b.portable_names()
    true_reset = _true_reset(graph)
    pops = {n.name: {"threshold": _json_array(n.threshold), "out_scale": _json_array(n.out_scale),
                     "v0": _json_array(n.v0), "bias": _json_array(n.bias), "reset": n.reset}
            for n in graph.nodes if isinstance(n, IF)}
    restore = {
        "format": 2,
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
    dt = SNNTORCH_DT if form == "snntorch" else 1.0
    if_reset = "subtract" if form == "sinabs" else "zero"
    metadata = {
        "generator": f"onnx2snn {__version__}",
        "onnx2snn_version": __version__,
        "nir_for": form,
        "dt": dt,
        "time_unit": f"one simulation step = dt = {dt:g} NIR time units",
        "reset": true_reset,
        "if_reset": if_reset if reset == "zero" else "none (no IF node)",
        "if_semantics": IF_SEMANTICS[form] if reset == "zero" else
        "exact: reset by subtraction as I -> Threshold -> Scale(-theta) -> I",
        "nir_reset": reset,
        "pool": pool,
        "spikes": "binary; the worth of a spike (the scale of its population) is folded into "
                  "the weights of the next synapse",
        "readout": "prediction at step t = (sum of the Output over steps 1..t) / t, argmax for "
                   "classes",
        "flatten": "none written: a fully connected layer after a (C, H, W) tensor is a Conv2d "
                   "whose kernel covers the input, giving (F, 1, 1)",
        "scales": json.dumps(scales),
        METADATA_KEY: json.dumps(restore),
    }
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata=metadata)


__all__ = ["IF_SEMANTICS", "METADATA_KEY", "NIR_FORMS", "NIR_POOL_MODES", "NIR_RESET_MODES",
           "check_nir", "nir_name", "to_nir"]
