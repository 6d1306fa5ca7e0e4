"""Validating a parsed ONNX model before any conversion work: refuse what is malformed, by name.

``validate_model`` runs after the file is parsed and its external data is read, and before the
frontend looks at a single node. In order, each step raises at the first kind of problem it finds:

1. ``onnx.checker`` (structure: every value defined, attributes of the schema's types, ...);
2. opsets: every known domain's version must be one the installed ``onnx`` defines
   (``ai.onnx`` 1..28 with onnx 1.23), so opset 99 is refused instead of read with other semantics;
3. graph inputs and outputs: no negative input dimension, no output listed twice;
4. constants (initializers and ``Constant`` nodes): no strings, no negative dimensions, data that
   fits the declared shape, only finite values (±inf is allowed only as a ``Clip`` bound, where it
   means "unbounded"), and no empty weight of a layer (a kernel dimension of 0);
5. attribute ranges, by attribute name on every node: ``kernel_shape``, ``strides``, ``dilations``
   and ``group`` ≥ 1, ``pads`` ≥ 0;
6. strict shape and type inference (what ``onnx.checker``'s full check adds), which finds invalid
   typing and shapes the steps above do not name;
7. attributes that must fit the rank of their input, from the inferred shapes: ``perm`` of
   Transpose permutes the input's axes, ``axis`` of Concat, Softmax, Gather, Split and Flatten
   names one of them.

Every message is one line naming the node (or tensor, or input), the attribute and the offending
value, and what to do; these models are malformed (invalid ONNX, or numbers no network can compute
with) and raise ``InputFileError`` (exit code 3). Valid ONNX that onnx2snn cannot feed (no inputs
or outputs, symbolic, empty or non-float inputs) is found by ``feed_problems``, which the frontend
reports with the unsupported nodes (``UnsupportedModelError``, exit code 4, listed by ``inspect``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from onnx2snn.errors import InputFileError

# Attributes that count something and must be >= 1, and those that must be >= 0, on any op.
POSITIVE_ATTRIBUTES = ("kernel_shape", "strides", "dilations", "group")
NON_NEGATIVE_ATTRIBUTES = ("pads",)
# Inputs that hold a layer's weights: an empty one (a dimension of 0) computes nothing.
WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (0, 1),
    "BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2), "PRelu": (1,),
    "LayerNormalization": (1, 2),
}
# Inputs where an infinite constant has a meaning: a Clip bound of ±inf is "no bound".
INFINITE_OK: dict[str, tuple[int, ...]] = {"Clip": (1, 2)}
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
               onnx.TensorProto.BFLOAT16}
KNOWN_TYPES = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
SHOWN = 3  # how many offenders a message names before "and N more"


def type_name(elem_type: int) -> str:
    """``TensorProto`` element type number -> its name (``FLOAT``, ``INT8``, ...)."""
    try:
        return str(onnx.TensorProto.DataType.Name(elem_type))
    except ValueError:
        return f"<unknown type {elem_type}>"


def validate_model(model: onnx.ModelProto, source: str, serialized: bytes | None = None) -> None:
    """Refuse a malformed or unfeedable model with one clear error; see the module doc.

    ``serialized`` are the model's bytes if the caller holds them (spares the checker a
    serialization); without them, or for models with external data, the proto is checked.
    """
    checked: onnx.ModelProto | bytes = serialized if serialized is not None else model
    run_checker(checked, source)
    check_opsets(model, source)
    check_inputs(model, source)
    check_constants(model, source)
    check_attributes(model, source)
    check_axes(infer_shapes(checked, source, model), source)


# -- 1 and 6: onnx.checker and strict shape inference ----------------------------------------------
_NODE_CONTEXT = re.compile(r"[Nn]ame: (?P<name>\S*) OpType: (?P<op>\S+)")
_INFERENCE_NODE = re.compile(r"\(op_type:(?P<op>[^,]+), node name: (?P<name>[^)]*)\):\s*"
                             r"(?:\[\w+\]\s*)?(?P<what>[^|\n]*)")
# the checker raises ValueError for, e.g., an element type number no ONNX release defines
CHECKER_ERRORS = (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError)


def run_checker(model: onnx.ModelProto | bytes, source: str) -> None:
    """``onnx.checker.check_model`` (structure, not shapes), its message as one line."""
    try:
        onnx.checker.check_model(model)
    except CHECKER_ERRORS as e:
        raise InputFileError(f"{source}: {checker_message(str(e), full=False)}") from None


def infer_shapes(model: onnx.ModelProto | bytes, source: str,
                 proto: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """Strict shape and type inference (what ``check_model(full_check=True)`` adds), one line.

    Returns the model with the inferred ``value_info``, for the checks that need ranks. When it
    fails and an input (of ``proto``) is not float32, the usual cause, the message says so.
    """
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except CHECKER_ERRORS as e:
        typed = [f"input {vi.name!r} has element type {type_name(vi.type.tensor_type.elem_type)}"
                 for vi in (run_time_inputs(proto) if proto is not None else [])
                 if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT]
        hint = f" ({'; '.join(typed)}: onnx2snn feeds float32 samples, export the model with a " \
               "float32 input)" if typed else ""
        raise InputFileError(f"{source}: {checker_message(str(e), full=True)}{hint}") from None


def checker_message(text: str, full: bool) -> str:
    """The checker's (often multi-line, multi-error) message as one line that names the node."""
    what = "shape and type inference" if full else "the ONNX checker"
    m = _INFERENCE_NODE.search(text)
    if m:
        detail = re.sub(r"^\[\w+\]\s*", "", m.group("what").strip())
        return (f"{what} rejects node {m.group('name')!r} ({m.group('op')}): {detail}; the model "
                "is not valid ONNX, re-export it")
    body, _, context = text.partition("==> Context:")
    body = re.sub(r"^(\[\w+\]\s*)+", "", " ".join(body.split())) or "invalid model"
    m = _NODE_CONTEXT.search(context or text)
    where = f" node {m.group('name')!r} ({m.group('op')}):" if m else ""
    return f"{what} rejects the model:{where} {body}"


# -- 2: opsets ---------------------------------------------------------------------------------
def check_opsets(model: onnx.ModelProto, source: str) -> None:
    """Every domain the installed onnx knows must be imported at a version it defines."""
    known = onnx.defs.C.schema_version_map()  # {domain: (first, last)}
    for imp in model.opset_import:
        domain = "" if imp.domain == "ai.onnx" else imp.domain
        if domain not in known:
            continue  # a custom domain: its ops are refused by name later
        first, last = known[domain]
        if not first <= imp.version <= last:
            label = f"domain {imp.domain!r}" if domain else "the default domain (ai.onnx)"
            raise InputFileError(
                f"{source}: opset {imp.version} of {label} is not one onnx {onnx.__version__} "
                f"defines ({first}..{last}); re-export with an opset in that range (or upgrade "
                "onnx if the model comes from a newer release)")


# -- 3: graph inputs and outputs ------------------------------------------------------------------
def check_inputs(model: onnx.ModelProto, source: str) -> None:
    """Malformed inputs and outputs: a negative input dimension, an output listed twice."""
    g = model.graph
    for vi in run_time_inputs(model):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim if d.HasField("dim_value")]
        if any(d < 0 for d in dims):
            shape = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?"
                     for d in vi.type.tensor_type.shape.dim]
            axis = next(i for i, d in enumerate(shape) if isinstance(d, int) and d < 0)
            raise InputFileError(f"{source}: input {vi.name!r} has dimension {shape[axis]} on axis "
                                 f"{axis} (shape {shape}); dimensions cannot be negative: the "
                                 "model is not valid ONNX")
    names = [o.name for o in g.output]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputFileError(f"{source}: output {twice[0]!r} is listed {names.count(twice[0])} "
                             "times among the graph outputs; the model is not valid, re-export it")


def run_time_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs fed at run time (old models also list their initializers as inputs)."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def feed_problems(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """Why onnx2snn cannot feed this (valid) model: ``(kind, name, reason)`` problems.

    At least one input and one output; each input a float32 tensor whose per-sample dimensions
    (all but the first, the batch axis) are fixed positive numbers; no sparse tensors. The
    frontend reports these with the unsupported nodes (``UnsupportedModelError``, exit code 4)
    before converting any node.
    """
    problems = []
    inputs = run_time_inputs(model)
    if not inputs:
        problems.append(("Input", "(none)", "the model has no inputs (every value in it is a "
                         "constant), so there is nothing to feed a spiking network; export it "
                         "with the network input as a graph input"))
    if not model.graph.output:
        problems.append(("Output", "(none)", "the model has no outputs, so it computes nothing; "
                         "export it with the network's result as a graph output"))
    for vi in inputs:
        reason = _input_problem(vi)
        if reason:
            problems.append(("Input", vi.name, reason))
    for t in model.graph.sparse_initializer:
        problems.append(("Initializer", t.values.name or "(unnamed)", "a sparse tensor, which "
                         "onnx2snn does not read; export the model with dense weights"))
    for i, n in enumerate(model.graph.node):
        if any(a.HasField("sparse_tensor") for a in n.attribute):
            problems.append((n.op_type, n.name or f"{n.op_type}_{i}", "holds a sparse tensor, "
                             "which onnx2snn does not read; export with dense weights"))
    return problems


def _input_problem(vi: onnx.ValueInfoProto) -> str | None:
    kind = vi.type.WhichOneof("value")
    if kind != "tensor_type":
        return f"a {kind or 'value of no type'}, not a tensor; onnx2snn feeds one float32 tensor"
    tt = vi.type.tensor_type
    if tt.elem_type != onnx.TensorProto.FLOAT:
        return (f"element type {type_name(tt.elem_type)}; onnx2snn feeds float32 samples: export "
                "the model with a float32 input (do any input quantization or type conversion "
                "outside the model)")
    if not tt.HasField("shape") or not tt.shape.dim:
        return "the input has no shape; export with static shapes (only the batch axis may be dynamic)"
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    if dims[0] == 0 and len(dims) > 1:
        return f"a batch axis of size 0 (shape {dims}); export with a dynamic or positive batch size"
    for axis, d in enumerate(dims[1:], start=1):
        if isinstance(d, str):
            return (f"symbolic dimension {d!r} on axis {axis} (shape {dims}); onnx2snn needs "
                    "fixed per-sample sizes: export with a fixed size for every axis but the "
                    "first (batch), e.g. a fixed image size or sequence length")
        if d == 0:
            return (f"size 0 on axis {axis} (shape {dims}): each sample would be empty; export "
                    "with the real input size")
    return None


# -- 4: constants ------------------------------------------------------------------------------
def constant_tensors(model: onnx.ModelProto) -> Iterator[tuple[onnx.TensorProto, str, str]]:
    """Every constant tensor of the main graph: (tensor, where it is defined, the value it names).

    ``Constant`` nodes given as ``value_float(s)`` are returned as float32 tensors.
    """
    for t in model.graph.initializer:
        yield t, f"initializer {t.name!r}", t.name
    for i, n in enumerate(model.graph.node):
        if n.op_type != "Constant" or n.domain not in ("", "ai.onnx") or not n.output:
            continue
        for a in n.attribute:
            where = f"Constant node {n.name or f'Constant_{i}'!r} ({a.name})"
            if a.HasField("t"):
                yield a.t, where, n.output[0]
            elif a.name in ("value_float", "value_floats"):
                floats = [a.f] if a.name == "value_float" else list(a.floats)
                yield numpy_helper.from_array(np.array(floats, np.float32)), where, n.output[0]


def consumers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int, str]]]:
    """Value name -> the nodes reading it: (node, input position, stable node name)."""
    out: dict[str, list[tuple[onnx.NodeProto, int, str]]] = {}
    for i, n in enumerate(model.graph.node):
        for k, name in enumerate(n.input):
            if name:
                out.setdefault(name, []).append((n, k, n.name or f"{n.op_type}_{i}"))
    return out


def check_constants(model: onnx.ModelProto, source: str) -> None:
    """Constants hold numbers that fit their shape, all finite, and no layer weight is empty."""
    readers = consumers(model)
    nonfinite: list[str] = []
    for t, where, value in constant_tensors(model):
        if t.data_type not in KNOWN_TYPES:
            raise InputFileError(f"{source}: {where} has element type {t.data_type}, which ONNX "
                                 "does not define; the file is corrupt, re-export it")
        if t.data_type == onnx.TensorProto.STRING:
            raise InputFileError(f"{source}: {where} holds strings (element type STRING); a "
                                 "network's constants must be numbers: re-export the model")
        if any(d < 0 for d in t.dims):
            raise InputFileError(f"{source}: {where} has a negative dimension (shape "
                                 f"{list(t.dims)}): the model is not valid ONNX")
        used_by = readers.get(value, [])
        if 0 in t.dims:
            for node, k, name in used_by:
                if k in WEIGHT_INPUTS.get(node.op_type, ()):
                    raise InputFileError(
                        f"{source}: {node.op_type} node {name!r} has an empty weight: {where}, "
                        f"input {k}, has shape {list(t.dims)} (a dimension of 0); re-export "
                        "the model")
        for node, k, name in used_by:
            if k in WEIGHT_INPUTS.get(node.op_type, ()) and t.data_type != onnx.TensorProto.FLOAT:
                raise InputFileError(
                    f"{source}: {node.op_type} node {name!r} reads {where} as input {k}, of "
                    f"element type {type_name(t.data_type)}; the layer computes in float32 and "
                    "needs float32 weights: re-export the model (ONNX does not mix types here)")
        try:  # every numeric constant: its data must fit its shape and type
            arr = numpy_helper.to_array(t)
        except Exception as e:  # onnx raises ValueError, TypeError, ... for data of the wrong size
            raise InputFileError(f"{source}: {where} has data that does not fit its shape "
                                 f"{list(t.dims)} and type {type_name(t.data_type)} ({e}); "
                                 "the file is corrupt, re-export it") from None
        if t.data_type not in FLOAT_TYPES:
            continue
        values = arr if arr.dtype.kind == "f" else np.asarray(arr, dtype=np.float32)  # bfloat16
        if np.isfinite(values).all():  # the common case: one pass, no mask kept
            continue
        nan, inf = np.isnan(values), np.isinf(values)
        if inf.any() and used_by and all(k in INFINITE_OK.get(node.op_type, ())
                                         for node, k, _ in used_by):
            inf = np.zeros_like(inf)
        if nan.any() or inf.any():
            first = tuple(int(i) for i in np.argwhere(nan | inf)[0]) if values.ndim else ()
            counts = [f"{int(c.sum())} {word}" for c, word in ((nan, "NaN"), (inf, "±inf"))
                      if c.any()]
            nonfinite.append(f"{where} holds {' and '.join(counts)} value(s) (first at index "
                             f"{first})")
    if nonfinite:
        more = f" (and {len(nonfinite) - SHOWN} more)" if len(nonfinite) > SHOWN else ""
        raise InputFileError(f"{source}: {'; '.join(nonfinite[:SHOWN])}{more}: a network's "
                             "weights and constants must be finite; retrain or re-export the "
                             "model")


# -- 5: attribute ranges -----------------------------------------------------------------------
def check_attributes(model: onnx.ModelProto, source: str) -> None:
    """Sizes, strides, dilations and groups are >= 1 and pads >= 0, on every node that has them."""
    for i, n in enumerate(model.graph.node):
        for a in n.attribute:
            if a.name in POSITIVE_ATTRIBUTES:
                floor, words = 1, "must be at least 1"
            elif a.name in NON_NEGATIVE_ATTRIBUTES:
                floor, words = 0, "cannot be negative (negative pads crop the input)"
            else:
                continue
            values = list(a.ints) if a.type == onnx.AttributeProto.INTS else \
                [a.i] if a.type == onnx.AttributeProto.INT else []
            bad = [v for v in values if v < floor]
            if bad:
                shown = values if len(values) > 1 else values[0]
                raise InputFileError(
                    f"{source}: {n.op_type} node {n.name or f'{n.op_type}_{i}'!r}: attribute "
                    f"{a.name} = {shown}: {a.name} {words}; the model is not valid, re-export "
                    "it")


# -- 7: attributes that must fit the rank of their input (from the inferred shapes) ---------------
# op -> (attribute, how far it may reach past the last axis: 0 for an axis, 1 for a split point)
AXIS_ATTRIBUTES: dict[str, tuple[str, int]] = {
    "Concat": ("axis", 0), "Softmax": ("axis", 0), "LogSoftmax": ("axis", 0),
    "Gather": ("axis", 0), "Split": ("axis", 0), "Flatten": ("axis", 1),
}


def ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every value whose shape is known (graph inputs, outputs, inferred values)."""
    out = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        tt = vi.type.tensor_type
        if vi.type.WhichOneof("value") == "tensor_type" and tt.HasField("shape"):
            out[vi.name] = len(tt.shape.dim)
    for t in model.graph.initializer:
        out[t.name] = len(t.dims)
    return out


def check_axes(model: onnx.ModelProto, source: str) -> None:
    """``perm`` permutes the input's axes; ``axis`` attributes name one of them."""
    rank = ranks(model)
    for i, n in enumerate(model.graph.node):
        if n.domain not in ("", "ai.onnx") or not n.input or n.input[0] not in rank:
            continue
        r = rank[n.input[0]]
        where = f"{source}: {n.op_type} node {n.name or f'{n.op_type}_{i}'!r}"
        for a in n.attribute:
            if n.op_type == "Transpose" and a.name == "perm" and sorted(a.ints) != list(range(r)):
                raise InputFileError(f"{where}: attribute perm = {list(a.ints)} is not a "
                                     f"permutation of the {r} axes of its input "
                                     f"{n.input[0]!r}; the model is not valid, re-export it")
            name, past = AXIS_ATTRIBUTES.get(n.op_type, ("", 0))
            if a.name == name and not -r <= a.i < r + past:
                raise InputFileError(f"{where}: attribute {name} = {a.i} is outside "
                                     f"{-r}..{r - 1 + past} for its input {n.input[0]!r} of "
                                     f"rank {r}; the model is not valid, re-export it")


__all__ = ["check_attributes", "check_axes", "check_constants", "check_inputs", "check_opsets",
           "checker_message", "feed_problems", "infer_shapes", "run_checker", "run_time_inputs",
           "validate_model"]
