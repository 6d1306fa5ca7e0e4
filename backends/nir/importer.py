"""``.nir`` file / ``nir.NIRGraph`` → SNN graph, two ways.

``from_nir`` reads *any* NIR graph (ours or another tool's) into an IR graph that means what the
file means under NIR's own semantics: ``IF``/``LIF`` become ``NirNeuron`` populations (reset to
``v_reset``, strict ``v > θ``, binary spikes), the loop ``I → Threshold → Scale → I`` becomes a
subtract-reset ``NirNeuron``, ``SumPool2d`` a ``SumPool``, ``Affine``/``Linear`` a ``Dense``,
``Conv2d`` a ``Conv``, ``Flatten`` a ``Reshape``, ``Scale`` an ``Affine``, each ``Output`` a
``Readout`` (prediction at step t = sum of the output over steps / t) and several edges into one
node an ``Add`` named ``<node>.sum``. One NIR time unit is one step (``dt``, default 1, scales
``r`` and ``τ``). What has no such form (``Delay``, ``Conv1d``, ``CubaLIF``, ``LI``, sub-graphs, a
lone ``I`` or ``Threshold``) is refused, every node at once, by name.

``restore_ir`` rebuilds the exact IR graph that ``to_nir`` exported (``IF`` with out_scale λ, the
ANN's weights, ``AvgPool``, ``Add``), taking every parameter from the NIR nodes and undoing the
folding with the scales recorded in the file's metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from onnx2snn.backends.nir.export import METADATA_KEY, _Builder, nir_name, regroup
from onnx2snn.backends.nir.nodes import NirNeuron, SumPool
from onnx2snn.errors import BackendError, InputFileError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Add, Affine, AvgPool, Conv, Dense, Input, Node, Reshape
from onnx2snn.ir.spiking import IF, Readout


def read_nir_file(path: str | os.PathLike[str]) -> Any:
    """``nir.read`` with errors as ``InputFileError``."""
    import nir

    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: no such NIR file")
    try:
        return nir.read(p)
    except Exception as e:  # h5py / nir raise many types
        first = e
    try:  # nir 1.0.8's type check rejects valid grouped Conv2d nodes: read without it
        return nir.read(p, type_check=False)
    except Exception:
        raise InputFileError(f"{p}: not a readable NIR file ({type(first).__name__}: {first})"
                             ) from None


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in np.asarray(t).reshape(-1))


def _pair(v: Any) -> tuple[int, int]:
    a = np.asarray(v).reshape(-1)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def _reset_loops(g: Any) -> dict[str, tuple[str, str]]:
    """Threshold name -> (I name, Scale name) for every I → Threshold → Scale → I loop."""
    import nir

    succ: dict[str, list[str]] = {k: [] for k in g.nodes}
    for a, b in g.edges:
        succ[a].append(b)
    loops = {}
    for i_name, node in g.nodes.items():
        if not isinstance(node, nir.I):
            continue
        for t in succ[i_name]:
            if isinstance(g.nodes[t], nir.Threshold):
                for s in succ[t]:
                    if isinstance(g.nodes[s], nir.Scale) and i_name in succ[s]:
                        loops[t] = (i_name, s)
    return loops


def _toposort(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    indeg = {n: 0 for n in names}
    succ: dict[str, list[str]] = {n: [] for n in names}
    for a, b in edges:
        succ[a].append(b)
        indeg[b] += 1
    ready = sorted(n for n in names if indeg[n] == 0)
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    if len(order) != len(names):
        rest = sorted(set(names) - set(order))
        raise BackendError(f"the NIR graph has a cycle through {', '.join(rest)} that is not an "
                           "I -> Threshold -> Scale -> I reset loop")
    return order


def from_nir(source: Any, dt: float | None = None) -> Graph:
    """An IR graph with NIR's semantics from a ``nir.NIRGraph`` or a ``.nir`` path."""
    import nir

    g = read_nir_file(source) if isinstance(source, (str, os.PathLike)) else source
    meta = dict(getattr(g, "metadata", {}) or {})
    if dt is None:
        dt = float(meta.get("dt", 1.0))
    # An IF means reset to v_reset (nir 1.0.8) unless the writer declared nir 1.0.4's IF,
    # which resets by subtraction (onnx2snn's --nir-for sinabs writes "if_reset": "subtract").
    if_reset = "subtract" if meta.get("if_reset") == "subtract" else "zero"
    loops = _reset_loops(g)
    hidden = {m for pair in loops.values() for m in pair}
    names = [k for k in g.nodes if k not in hidden]
    edges = []
    owner = {m: t for t, pair in loops.items() for m in pair}  # loop member -> its Threshold
    for a, b in g.edges:
        if owner.get(a, a) == owner.get(b, b) and (a in owner or b in owner):
            continue  # an edge inside a reset loop
        if b in owner and loops[owner[b]][0] == b:  # into the loop's I: into the population
            b = owner[b]
        if a in owner or b in owner:
            raise BackendError(f"NIR edge {a!r} -> {b!r} enters or leaves an I -> Threshold -> "
                               "Scale -> I reset loop other than through its I and Threshold")
        edges.append((a, b))
    order = _toposort(names, edges)
    preds: dict[str, list[str]] = {n: [] for n in names}
    for a, b in edges:
        preds[b].append(a)

    problems: list[str] = []
    ir: dict[str, Node] = {}
    out_of: dict[str, str] = {}  # NIR name -> IR node holding its output
    outputs: list[str] = []

    def build(cls: type, name: str, inputs: tuple[str, ...], **kw: Any) -> str:
        probe = cls(name=name, inputs=inputs, shape=(1,), **kw)
        ir[name] = probe.replace(shape=probe.infer_shape([ir[i].shape for i in inputs]))
        return name

    for name in order:
        node = g.nodes[name]
        kind = type(node).__name__
        srcs = [out_of[p] for p in preds[name] if p in out_of]
        if len(srcs) != len(preds[name]):
            continue  # an input was refused
        if isinstance(node, nir.Input):
            ir[name] = Input(name=name, inputs=(), shape=_shape(node.input_type["input"]))
            out_of[name] = name
            continue
        if not srcs:
            problems.append(f"NIR {kind} node {name!r} has no input")
            continue
        if len(srcs) > 1:
            shapes = {ir[s].shape for s in srcs}
            if len(shapes) != 1:
                problems.append(f"NIR {kind} node {name!r}: its inputs have shapes "
                                f"{sorted(shapes)} and cannot be summed")
                continue
            src = build(Add, f"{name}.sum", tuple(srcs))
        else:
            src = srcs[0]
        try:
            made = _convert(node, name, src, ir, build, loops, g, dt, if_reset)
        except BackendError as e:
            problems.append(str(e))
            continue
        if made is None:
            continue
        out_of[name] = made
        if isinstance(node, nir.Output):
            outputs.append(made)
    if problems:
        raise BackendError("cannot read this NIR graph:\n  " + "\n  ".join(problems))
    if not outputs:
        raise BackendError("the NIR graph has no Output node")
    nodes = [ir[k] for k in _ir_order(ir)]
    ir_names = json.loads(meta[METADATA_KEY]).get("names", {}) if METADATA_KEY in meta else {}
    return Graph(tuple(nodes), tuple(outputs),
                 {"stage": "nir", "nir_metadata": {k: v for k, v in meta.items()
                                                   if k != METADATA_KEY}, "dt": dt,
                  "ir_names": ir_names})


def _ir_order(ir: dict[str, Node]) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()

    def visit(n: str) -> None:
        if n in seen:
            return
        for i in ir[n].inputs:
            visit(i)
        seen.add(n)
        order.append(n)

    for n in ir:
        visit(n)
    return order


def _convert(node: Any, name: str, src: str, ir: dict[str, Node], build: Any,
             loops: dict[str, tuple[str, str]], g: Any, dt: float,
             if_reset: str = "zero") -> str | None:
    import nir

    kind = type(node).__name__
    ins = (src,)
    f64 = np.float64
    if isinstance(node, nir.Output):
        s = ir[src].shape
        if len(s) == 3 and s[1:] == (1, 1):  # (F, 1, 1), as a full-size Conv2d writes it:
            ir[f"{name}.flat"] = Reshape(name=f"{name}.flat", inputs=ins, shape=(s[0],))
            ins = (f"{name}.flat",)  # so that predictions are (F,)
        return build(Readout, name, ins)
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight, f64)
        if w.ndim != 2:
            raise BackendError(f"NIR {kind} node {name!r}: weight of shape {w.shape} is not 2-D")
        bias = np.asarray(node.bias, f64) if isinstance(node, nir.Affine) else None
        if len(ir[src].shape) != 1:
            raise BackendError(f"NIR {kind} node {name!r} reads a {ir[src].shape} tensor; add a "
                               "Flatten before it")
        return build(Dense, name, ins, weight=w, bias=bias)
    if isinstance(node, nir.Conv2d):
        pad = node.padding
        w = np.asarray(node.weight, f64)
        if isinstance(pad, str):
            if pad == "valid":
                pad = (0, 0)
            elif all(k % 2 == 1 for k in w.shape[2:]) and tuple(_pair(node.stride)) == (1, 1):
                pad = tuple((np.array(_pair(node.dilation)) * (np.array(w.shape[2:]) - 1)) // 2)
            else:
                raise BackendError(f"NIR Conv2d node {name!r}: padding 'same' with an even kernel "
                                   "or a stride is asymmetric")
        ph, pw = _pair(pad)
        return build(Conv, name, ins, weight=w,
                     bias=np.asarray(node.bias, f64), strides=_pair(node.stride),
                     pads=(ph, pw, ph, pw), dilations=_pair(node.dilation),
                     groups=int(np.asarray(node.groups)))
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        ph, pw = _pair(node.padding)
        cls = SumPool if isinstance(node, nir.SumPool2d) else AvgPool
        return build(cls, name, ins, kernel=_pair(node.kernel_size),
                     strides=_pair(node.stride), pads=(ph, pw, ph, pw), count_include_pad=True)
    if isinstance(node, nir.Flatten):
        s = ir[src].shape
        start, end = int(node.start_dim), int(node.end_dim)
        end = len(s) - 1 if end == -1 else end
        if not 0 <= start <= end < len(s):
            raise BackendError(f"NIR Flatten node {name!r}: dims {start}..{end} do not fit the "
                               f"per-sample shape {s} (NIR shapes have no batch axis)")
        shape = s[:start] + (int(np.prod(s[start:end + 1])),) + s[end + 1:]
        ir[name] = Reshape(name=name, inputs=ins, shape=shape)
        return name
    if isinstance(node, nir.Scale):
        return build(Affine, name, ins, scale=np.asarray(node.scale, f64))
    if isinstance(node, (nir.IF, nir.LIF)):
        r = np.asarray(node.r, f64)
        if isinstance(node, nir.IF):
            gain, leak, v_leak = r * dt, None, None
            if if_reset == "subtract":
                return build(NirNeuron, name, ins, threshold=np.asarray(node.v_threshold, f64),
                             gain=gain, v_reset=np.zeros(()), reset="subtract")
        else:
            tau = np.asarray(node.tau, f64)
            gain, leak, v_leak = r * dt / tau, dt / tau, np.asarray(node.v_leak, f64)
        return build(NirNeuron, name, ins,
                     threshold=np.asarray(node.v_threshold, f64), gain=gain,
                     v_reset=np.asarray(node.v_reset, f64), leak=leak, v_leak=v_leak)
    if isinstance(node, nir.Threshold) and name in loops:
        i_name, s_name = loops[name]
        r = np.asarray(g.nodes[i_name].r, f64)
        theta = np.asarray(node.threshold, f64)
        amount = -r * np.asarray(g.nodes[s_name].scale, f64)
        if not np.allclose(amount, theta, rtol=1e-6, atol=0):
            raise BackendError(f"NIR reset loop {i_name!r} -> {name!r} -> {s_name!r} subtracts "
                               "r·scale != threshold: not a reset by subtraction")
        return build(NirNeuron, name, ins, threshold=theta,
                     gain=r * dt, v_reset=np.zeros(()), reset="subtract")
    why = {"I": "an integrator outside an I -> Threshold -> Scale -> I reset loop",
           "Threshold": "a threshold outside an I -> Threshold -> Scale -> I reset loop",
           "NIRGraph": "nested NIR sub-graphs are not read; flatten the graph first"}
    raise BackendError(f"NIR {kind} node {name!r}: "
                       + why.get(kind, f"{kind} has no form in onnx2snn's simulator"))


# -- exact restoration of graphs written by to_nir -------------------------------------------
def _from_json(d: Any) -> np.ndarray | None:
    return None if d is None else np.asarray(d["data"], np.float64).reshape(d["shape"])


def _required(p: dict[str, Any], key: str, name: str) -> np.ndarray:
    """``_from_json(p[key])``, which the metadata of population ``name`` must not leave empty."""
    a = _from_json(p[key])
    if a is None:
        raise BackendError(f"population {name!r}: the onnx2snn metadata has no {key} "
                           "(was the file edited?)")
    return a


def restore_ir(source: Any) -> Graph:
    """The IR graph ``to_nir`` exported, rebuilt from a NIR graph (or ``.nir`` path) it wrote."""
    import nir

    g = read_nir_file(source) if isinstance(source, (str, os.PathLike)) else source
    raw = (getattr(g, "metadata", {}) or {}).get(METADATA_KEY)
    if raw is None:
        raise BackendError("this NIR graph was not written by onnx2snn (no 'onnx2snn' metadata); "
                           "read it with from_nir, which keeps NIR's own semantics")
    md = json.loads(raw)
    by_ir = {v: k for k, v in md["names"].items()}
    nodes: dict[str, Node] = {}

    def nir_of(n: str) -> Any:
        try:
            return g.nodes[by_ir[n]]
        except KeyError:
            raise BackendError(f"the NIR graph lacks the node of {n!r} its metadata names") from None

    for name in md["order"]:
        kind = md["kinds"][name]
        ins = tuple(md["inputs"][name])
        common = {"name": name, "inputs": ins, "origin": tuple(md["origin"].get(name, ()))}
        if kind == "input":
            nodes[name] = Input(shape=_shape(nir_of(name).input_type["input"]), **common)
            continue
        in_shapes = [nodes[i].shape for i in ins]
        if kind == "dense":
            nn = nir_of(name)
            has_b = md["dense_bias"][name]
            bias = np.asarray(nn.bias, np.float64) if isinstance(nn, (nir.Affine, nir.Conv2d)) \
                else None
            weight = np.asarray(nn.weight, np.float64)  # a Conv2d over the whole input: flatten
            node: Node = Dense(shape=(1,), weight=weight.reshape(weight.shape[0], -1),
                               bias=bias if has_b else None, **common)
        elif kind == "conv":
            nn = nir_of(name)
            groups = int(md["conv_groups"][name])
            node = Conv(shape=(1,), weight=regroup(np.asarray(nn.weight, np.float64), groups),
                        bias=np.asarray(nn.bias, np.float64) if md["conv_bias"][name] else None,
                        strides=_pair(nn.stride), pads=tuple(md["conv_pads"][name]),
                        dilations=_pair(nn.dilation), groups=groups, **common)
        elif kind == "avgpool":
            nn, a = nir_of(name), md["avgpool"][name]
            node = AvgPool(shape=(1,), kernel=_pair(nn.kernel_size), strides=_pair(nn.stride),
                           pads=tuple(a["pads"]), count_include_pad=a["count_include_pad"],
                           ceil_mode=a["ceil_mode"], **common)
        elif kind == "reshape":
            node = Reshape(shape=(int(np.prod(in_shapes[0])),), **common)
        elif kind == "if":
            p = md["populations"][name]
            nn = nir_of(name)
            theta = _required(p, "threshold", name)
            got = np.asarray(nn.threshold if isinstance(nn, nir.Threshold) else nn.v_threshold)
            want = np.broadcast_to(theta, in_shapes[0]).reshape(-1)
            if want.size != got.size or not np.allclose(want, got.reshape(-1), rtol=1e-6):
                raise BackendError(f"population {name!r}: the NIR thresholds differ from the "
                                   "metadata (was the file edited?)")
            node = IF(shape=(1,), threshold=theta, out_scale=_required(p, "out_scale", name),
                      v0=_required(p, "v0", name), bias=_from_json(p["bias"]), reset=p["reset"],
                      **common)
        elif kind == "add":
            node = Add(shape=(1,), **common)
        elif kind == "readout":
            node = Readout(shape=(1,), **common)
        else:
            raise BackendError(f"cannot restore IR node kind {kind!r} from NIR")
        nodes[name] = node.replace(shape=node.infer_shape(in_shapes))
    graph = Graph(tuple(nodes.values()), tuple(md["outputs"]), md["meta"])
    # Undo the folding: divide each synapse by the worth of its input, take folded biases back.
    pool = str(g.metadata.get("pool", "sum"))
    b = _Builder(graph, "zero", pool, np.float64)
    b.plan_biases()
    for n in graph.nodes:
        if isinstance(n, (Dense, Conv)):
            b.producers.setdefault(n.name, [])
        b.worth[n.name] = np.ones(())
        if isinstance(n, IF):
            b.worth[n.name] = np.asarray(n.out_scale, np.float64)
        elif type(n) is AvgPool:
            c = np.broadcast_to(b.worth[n.inputs[0]], graph[n.inputs[0]].shape)
            c = c.reshape(c.shape[0], -1)[:, 0]
            k = n.kernel[0] * n.kernel[1]
            b.worth[n.name] = (c / k if pool == "sum" else c).reshape(-1, 1, 1)
        elif isinstance(n, Reshape):
            b.worth[n.name] = b.full_worth(n.inputs[0]).reshape(-1)
        elif isinstance(n, Add):
            ws = [b.full_worth(i) for i in n.inputs]
            b.worth[n.name] = ws[0] if all(np.array_equal(w, ws[0]) for w in ws) else np.ones(())
    fixed = []
    for n in graph.nodes:
        if isinstance(n, (Dense, Conv)):
            dtype = np.dtype(md["dtypes"][n.name])
            w_in = b.full_worth(n.inputs[0])
            if isinstance(n, Dense):
                weight = n.weight / w_in.reshape(1, -1)
            else:
                c = w_in.reshape(w_in.shape[0], -1)[:, 0]
                o, cg = n.weight.shape[:2]
                cidx = (np.arange(o) // (o // n.groups))[:, None] * cg + np.arange(cg)[None, :]
                weight = n.weight / c[cidx][:, :, None, None]
            bias = n.bias
            if bias is not None and n.name in b.bias_into:
                bias = bias - b.bias_into[n.name]
            n = n.replace(weight=weight.astype(dtype),
                          bias=None if bias is None else bias.astype(dtype))
        fixed.append(n)
    return graph.with_nodes(fixed)


__all__ = ["from_nir", "nir_name", "read_nir_file", "restore_ir"]
