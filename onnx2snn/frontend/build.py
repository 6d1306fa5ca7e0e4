"""ONNX model -> ANN graph: scan for unsupported ops, fold constants, convert node by node, tidy.

``onnx_to_ann`` is the frontend's entry point. It first scans the whole graph (which values are
constants, which ops have no converter at this opset) and then converts; every problem found on
the way is collected, and if there are any, one ``UnsupportedModelError`` lists them all with node
names. Nodes downstream of a failed node are skipped quietly (their problem is the upstream one).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx2snn import __version__
from onnx2snn.errors import IRError, UnsupportedModelError
from onnx2snn.frontend.context import Const, Context
from onnx2snn.frontend.load import LoadedModel, load_model
from onnx2snn.frontend.outputs import choose_output, final_values
from onnx2snn.frontend.registry import CONVERTERS, Unsupported, load_all, why_unsupported
from onnx2snn.frontend.simplify import SIMPLIFY
from onnx2snn.frontend.validate import feed_problems
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Input
from onnx2snn.passes import run_passes

NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Multinomial", "Bernoulli"}
SHAPE_ONLY = {"Shape"}  # reads only the static shape of a run-time tensor
CONSTANT_DTYPES = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
                   "value_ints": np.int64}


@dataclass
class ScanResult:
    """What a scan of the ONNX graph found before any conversion."""

    node_names: list[str]
    constant: list[bool]
    problems: list[tuple[str, str, str]] = field(default_factory=list)


def node_names(graph: onnx.GraphProto) -> list[str]:
    """Stable, unique names: the node's own name, else ``<op>_<position>``."""
    taken: set[str] = set()
    out = []
    for i, n in enumerate(graph.node):
        name = n.name or f"{n.op_type}_{i}"
        base, k = name, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        out.append(name)
    return out


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are fed at run time (old models also list initializers as inputs)."""
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def scan(model: onnx.ModelProto, opset: int, drop_ops: Iterable[str] = ()) -> ScanResult:
    """Find constant nodes and every node whose op cannot be converted, without converting."""
    load_all()
    g = model.graph
    names = node_names(g)
    const_values = {t.name for t in g.initializer} | {""}
    drop = set(drop_ops)
    outputs = final_values(g)
    result = ScanResult(names, [])
    for name, n in zip(names, g.node):
        is_const = (n.op_type not in NONDETERMINISTIC and n.domain in ("", "ai.onnx")
                    and (n.op_type in SHAPE_ONLY or all(i in const_values for i in n.input)))
        result.constant.append(is_const)
        if is_const:
            const_values.update(n.output)
            continue
        if n.op_type in drop:
            continue
        reason = why_unsupported(n.op_type, n.domain, opset)
        conv = CONVERTERS.get(n.op_type)
        if reason is None and conv is not None and conv.precheck is not None:
            reason = conv.precheck(n, const_values.__contains__, outputs)
        if reason is not None:
            result.problems.append((n.op_type, name, reason))
    return result


def fold_constant(node: onnx.NodeProto, opset: int, feeds: dict[str, np.ndarray]) -> list:
    """Evaluate one node on constant inputs with the ONNX reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    used = {k: v for k, v in feeds.items() if k}
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in used.items()]
    outputs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    model = helper.make_model(helper.make_graph([node], "fold", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", opset)])
    return list(ReferenceEvaluator(model).run(None, used))


def _input_nodes(ctx: Context, graph: onnx.GraphProto) -> list[tuple[str, str, str]]:
    problems = []
    for vi in real_inputs(graph):
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if not dims:
            problems.append(("Input", vi.name, "the input has no shape; export with static "
                             "shapes (batch axis may be dynamic)"))
            continue
        if any(d is None or d <= 0 for d in dims[1:]):
            problems.append(("Input", vi.name, f"per-sample dimensions must be static, got "
                             f"{dims[1:]}; export with fixed input size"))
            continue
        ctx.current_name = vi.name
        ctx.nodes.append(Input(name=vi.name, inputs=(), shape=tuple(int(d or 0) for d in dims[1:]),
                               origin=(vi.name,)))
        ctx.node_names.add(vi.name)
        ctx.input_side.add(vi.name)
        ctx.set_tensor(vi.name, vi.name)
    return problems


def convert_model(loaded: LoadedModel, drop_ops: Iterable[str] = (),
                  output: str | None = None) -> Graph:
    """Convert a loaded, checked ONNX model to a validated ANN graph.

    ``output`` names the value to convert to (``--output``); by default post-processing outputs
    (a classifier's label branch) are pruned when one output holds the scores (see
    ``frontend.outputs``).
    """
    model, choice = choose_output(loaded.model, output)
    opset = loaded.opset
    drop = set(drop_ops)
    result = scan(model, opset, drop)
    unfed = feed_problems(model)  # inputs that cannot be fed: converting nodes would be moot
    if unfed:
        raise UnsupportedModelError(unfed + result.problems, partial_graph=[])
    g = model.graph
    inputs = real_inputs(g)
    declared = None
    if inputs and inputs[0].type.tensor_type.shape.dim:
        d0 = inputs[0].type.tensor_type.shape.dim[0]
        declared = d0.dim_value if d0.HasField("dim_value") else None
    ctx = Context(opset, final_values(g), declared)
    ctx.used.update(i for n in g.node for i in n.input)
    for t in g.initializer:
        ctx.set(t.name, Const(numpy_helper.to_array(t)))
    problems = list(result.problems) + _input_nodes(ctx, g)
    bad = {p[1] for p in result.problems}
    poisoned: set[str] = set()
    for name, node, is_const in zip(result.node_names, g.node, result.constant):
        ctx.current, ctx.current_name = node, name
        if name in bad or any(i in poisoned for i in node.input if i):
            poisoned.update(node.output)
            continue
        try:
            if is_const:
                _fold(ctx, node, opset)
            elif node.op_type in drop:
                ctx.warnings.append(f"dropped {node.op_type} node {name} on request: the "
                                    "network's outputs change")
                ctx.set(node.output[0], ctx.value(node.input[0]))
            else:
                CONVERTERS[node.op_type].fn(ctx, node)
        except (Unsupported, IRError) as e:
            cause = e.cause if isinstance(e, Unsupported) and e.cause else (node.op_type, name)
            if (cause[0], cause[1], str(e)) not in problems:
                problems.append((cause[0], cause[1], str(e)))
            poisoned.update(node.output)
    outputs = []
    for o in g.output:
        if o.name in poisoned:
            continue
        ctx.current_name = o.name
        try:
            outputs.append(ctx.tensor(o.name))
        except (Unsupported, KeyError) as e:
            problems.append(("Output", o.name, f"cannot be an output: {e}"))
    if problems:
        raise UnsupportedModelError(problems, partial_graph=list(ctx.nodes))
    for w in ctx.warnings:
        warnings.warn(w, stacklevel=2)
    if choice.note:
        warnings.warn(choice.note, stacklevel=2)
    meta = {
        "stage": "ann",
        "source": os.path.basename(loaded.source),
        "source_sha256": loaded.sha256,
        "opset": opset,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "dropped": list(ctx.dropped),
        "pre_softmax": dict(ctx.pre_softmax),
        "approximations": list(ctx.warnings),
        "onnx_outputs": [o.name for o in loaded.model.graph.output],
        "output": list(choice.kept),
        "pruned_outputs": list(choice.pruned),
        "output_note": choice.note,
        "input_layouts": dict(ctx.input_layouts),
        "onnx2snn_version": __version__,
    }
    graph = Graph(tuple(ctx.nodes), tuple(outputs), meta)
    return run_passes(graph, SIMPLIFY)


def _fold(ctx: Context, node: onnx.NodeProto, opset: int) -> None:
    if node.op_type == "Constant":
        attr = node.attribute[0]
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, onnx.TensorProto):
            arr = numpy_helper.to_array(value)
        else:  # value_float(s) are float32 and value_int(s) int64 in ONNX, not numpy's defaults
            arr = np.array(value, dtype=CONSTANT_DTYPES.get(attr.name))
        ctx.set(node.output[0], Const(arr))
        return
    if node.op_type in SHAPE_ONLY:
        CONVERTERS[node.op_type].fn(ctx, node)
        return
    feeds = {i: ctx.const(i, "input") for i in node.input if i}
    try:
        outs = fold_constant(node, opset, feeds)
    except Exception as e:  # the reference evaluator raises many kinds
        raise Unsupported(f"cannot fold this constant computation ({type(e).__name__}: {e})") \
            from None
    for name, arr in zip([o for o in node.output if o], outs):
        ctx.set(name, Const(np.asarray(arr)))


def onnx_to_ann(model: str | os.PathLike[str] | bytes | onnx.ModelProto,
                drop_ops: Iterable[str] = (), output: str | None = None) -> Graph:
    """Load, check and convert an ONNX model (path, bytes or ModelProto) to an ANN graph.

    ``drop_ops`` names op types to remove as identities (an explicit, loudly warned approximation,
    e.g. ``["LRN"]``); ``output`` chooses the output to convert (see ``convert_model``). Raises
    ``InputFileError`` for bad files and ``UnsupportedModelError`` listing every node that cannot
    be converted.
    """
    return convert_model(load_model(model), drop_ops, output)


__all__ = ["ScanResult", "convert_model", "node_names", "onnx_to_ann", "scan"]
