"""Which outputs of an ONNX model are the network's: output selection before conversion.

Exporters of classifiers add post-processing outputs next to the scores: skl2onnx writes
``label`` (``ArgMax → ai.onnx.ml.ArrayFeatureExtractor → Reshape → Cast(int64)``) beside
``probabilities`` (``Softmax → Identity``), and with ``zipmap`` on it wraps the probabilities in a
``ZipMap`` (a sequence of maps, no tensor). A spiking network computes scores, not labels, so:

* ``choose_output(model, None)`` picks the scores automatically when every other output is
  post-processing of them (decision ops: ArgMax, ArgMin, TopK, ArrayFeatureExtractor, ZipMap,
  LabelEncoder, reached through Identity / Cast / Reshape / Squeeze / Unsqueeze / Flatten), or
  the input of a ``ZipMap`` when no output is a float tensor, and prunes the rest;
* ``choose_output(model, "NAME")`` keeps the one value ``NAME`` (a graph output, or any value a node
  computes, e.g. the input of a ZipMap) and prunes everything it does not depend on;
* a model whose outputs are several independent heads keeps them all (nothing is pruned).

``final_values`` lists the values that reach a graph output only through Identity, float Casts
and Dropout: a Softmax producing one of them is final (dropped, argmax-invariant).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import helper

from onnx2snn.errors import InputFileError

DECISION_OPS = {"ArgMax", "ArgMin", "TopK", "ArrayFeatureExtractor", "ZipMap", "LabelEncoder"}
CARRY_OPS = {"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten"}
SHAPE_OPS = {"Shape", "Gather", "Concat", "Slice"}  # shape arithmetic feeding a label's Reshape
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
               onnx.TensorProto.BFLOAT16}
PASS_TO_OUTPUT = {"Identity", "Dropout"}  # plus Cast to a float type


@dataclass(frozen=True)
class OutputChoice:
    """The output(s) kept, those pruned, and a sentence saying so (empty if nothing changed)."""

    kept: tuple[str, ...]
    pruned: tuple[str, ...] = ()
    note: str = ""
    explicit: bool = False
    chains: dict[str, str] = field(default_factory=dict)  # pruned output -> its op chain


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output if o}


def _ancestors(graph: onnx.GraphProto, names: list[str]) -> tuple[set[str], list[int]]:
    """Values ``names`` depend on (themselves included) and the indices of the nodes computing them."""
    prod = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    seen: set[str] = set()
    nodes: set[int] = set()
    stack = list(names)
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        if v in prod:
            nodes.add(prod[v])
            stack.extend(i for i in graph.node[prod[v]].input if i)
            for sub in graph.node[prod[v]].attribute:  # values read by subgraphs (If, Loop)
                if sub.HasField("g"):
                    stack.extend(i for n in sub.g.node for i in n.input if i)
    return seen, sorted(nodes)


def _is_float_tensor(vi: onnx.ValueInfoProto) -> bool:
    t = vi.type
    return t.HasField("tensor_type") and t.tensor_type.elem_type in FLOAT_TYPES


def _decision_chain(graph: onnx.GraphProto, output: str) -> tuple[list[str], set[str]] | None:
    """If ``output`` is post-processing, (its op chain, the run-time values it starts from)."""
    prod = _producers(graph)
    inits = {t.name for t in graph.initializer}
    ops: list[str] = []
    sources: set[str] = set()
    decided = False
    stack = [output]
    seen: set[str] = set()
    while stack:
        v = stack.pop()
        if v in seen or v in inits:
            continue
        seen.add(v)
        n = prod.get(v)
        if n is None:  # a graph input
            sources.add(v)
            continue
        if n.op_type == "Constant":
            continue
        if n.op_type in DECISION_OPS or n.op_type in CARRY_OPS or n.op_type in SHAPE_OPS:
            decided = decided or n.op_type in DECISION_OPS
            ops.append(n.op_type)
            stack.extend(i for i in n.input if i)
        else:  # computed by the network: where the post-processing starts
            sources.add(v)
    if not decided:
        return None
    return list(reversed(ops)), sources


def choose_output(model: onnx.ModelProto, requested: str | None = None
                  ) -> tuple[onnx.ModelProto, OutputChoice]:
    """The model restricted to the network's output(s) (see module doc), and what was chosen."""
    g = model.graph
    outputs = [o.name for o in g.output]
    computed = {o for n in g.node for o in n.output if o}
    if requested is not None:
        if requested not in computed and requested not in outputs:
            raise InputFileError(f"--output {requested!r}: the model has no such value; its "
                                 f"outputs are {', '.join(outputs)}")
        pruned = tuple(o for o in outputs if o != requested)
        note = "" if not pruned else (f"output {requested!r} chosen with --output; pruned "
                                      f"{', '.join(repr(p) for p in pruned)}")
        return _restrict(model, requested), OutputChoice((requested,), pruned, note, True)
    chains = {o: _decision_chain(g, o) for o in outputs}
    scores = [o.name for o in g.output if chains[o.name] is None and _is_float_tensor(o)]
    if not scores:
        zipmaps = [n for n in g.node if n.op_type == "ZipMap"]
        if len(zipmaps) == 1:
            scores = [zipmaps[0].input[0]]
    if len(scores) != 1 or outputs == scores:
        return model, OutputChoice(tuple(outputs))
    kept = scores[0]
    values, _ = _ancestors(g, [kept])
    others = [o for o in outputs if o != kept]
    for o in others:
        chain = chains[o]
        if chain is None or not chain[1] <= values:
            # an independent head: not ours to drop
            return model, OutputChoice(tuple(outputs))
    described = {o: " → ".join(chains[o][0]) for o in others}  # type: ignore[index]
    note = (f"output {kept!r} holds the network's scores and was chosen; pruned the "
            "post-processing output(s) " + "; ".join(f"{o!r} ({c})" for o, c in described.items())
            + " (choose another with --output NAME)")
    return _restrict(model, kept), OutputChoice((kept,), tuple(others), note, False, described)


def _restrict(model: onnx.ModelProto, output: str) -> onnx.ModelProto:
    """A copy of ``model`` whose only output is ``output``, without the nodes it does not need."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    _, keep = _ancestors(model.graph, [output])
    nodes = [g.node[i] for i in keep]
    existing = {o.name: o for o in g.output}
    vi = onnx.ValueInfoProto()
    vi.CopyFrom(existing.get(output) or next((v for v in g.value_info if v.name == output),
                                             helper.make_empty_tensor_value_info(output)))
    del g.node[:]
    g.node.extend(nodes)
    del g.output[:]
    g.output.append(vi)
    used = {i for n in g.node for i in n.input} | {output}
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    domains = {n.domain for n in g.node}
    imports = [o for o in out.opset_import if o.domain in ("", "ai.onnx") or o.domain in domains]
    del out.opset_import[:]
    out.opset_import.extend(imports)
    return out


def final_values(graph: onnx.GraphProto) -> set[str]:
    """Graph outputs and the values that reach one only through Identity, float Casts, Dropout."""
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    finals = {o.name for o in graph.output}
    changed = True
    while changed:
        changed = False
        for n in graph.node:
            passes = n.op_type in PASS_TO_OUTPUT or (
                n.op_type == "Cast" and any(a.name == "to" and a.i in FLOAT_TYPES
                                            for a in n.attribute))
            if (passes and n.output and n.output[0] in finals and n.input
                    and n.input[0] not in finals and readers.get(n.input[0], 0) == 1):
                finals.add(n.input[0])
                changed = True
    return finals


__all__ = ["OutputChoice", "choose_output", "final_values"]
