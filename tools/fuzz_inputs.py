"""Fuzz onnx2snn's command line with malformed models and data files; count internal errors.

    ./dev shell python tools/fuzz_inputs.py [--seconds 600] [--seed 0] [--save DIR]

Each input is a valid seed (small CNN, MLP, residual net built here with ``onnx.helper``, and
their data files) with one to three mutations: bytes of the protobuf flipped, cut or spliced;
attribute values (``strides``, ``kernel_shape``, ``pads``, ``axis``, ``perm``, ...) set to 0,
negative or huge numbers or removed; dimensions and element types of inputs, outputs and
initializers changed; weights filled with NaN, ±inf or huge values, or given data of the wrong
size; opsets changed; nodes, inputs and outputs deleted, rewired or given another op type; and
the ``.npz`` data files given other shapes, dtypes (object, string, bool, complex), NaN, labels
out of range, missing arrays or corrupt bytes; or a valid conversion whose OUT/ (manifest, graph
file, source copy) is then damaged before ``evaluate`` and ``emit`` read it.

Every input runs ``onnx2snn inspect``, ``convert`` (numpy target) and, when that succeeds,
``evaluate`` and ``emit``, in-process through click's runner, inside a forked child
with a memory limit and a time limit. Counted:

* internal errors: exit code 1 or an "internal error" line (the CLI's "this is a bug");
* crashes: the child died from a signal (a segfault in a native library);
* hangs: the child ran past ``--timeout`` seconds;
* stray files: anything left in the case folder besides the inputs and the output folders of
  commands that succeeded (a failed command must leave no partial OUT/, no temporary folder), or
  in the temporary folder (``TMPDIR``) the commands were given.

Prints the figures and exits 1 if any is non-zero. ``tests/test_fuzz_inputs.py`` runs the same
harness from hypothesis with a small fixed budget; this script is the long run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

T = TypeVar("T")

MEMORY_LIMIT = 3 * 2**30  # address space a case may add to the parent's, bytes
INTERESTING_INTS = [0, -1, -2, 1, 2, 3, 7, 64, 2**31 - 1, -(2**31), 2**62, 10**6]
PLAUSIBLE_INTS = [-3, -2, -1, 0, 1, 1, 2, 2, 3, 4, 5]  # values that often pass the ONNX checker
INTERESTING_FLOATS = [float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e38, -1e38, 1e-45,
                      3.4e38]
OPS = ["Relu", "Sigmoid", "Conv", "MaxPool", "AveragePool", "Gemm", "MatMul", "Add", "Mul",
       "Flatten", "Reshape", "Transpose", "Concat", "Softmax", "Clip", "BatchNormalization",
       "GlobalAveragePool", "Identity", "Dropout", "Pad", "Squeeze", "Unsqueeze", "Slice",
       "Gather", "LeakyRelu", "Sub", "Div", "ConvTranspose", "Split", "Resize", "Tanh", "Sum",
       "ReduceMean", "Neg", "Cast", "Shape", "ConstantOfShape", "Constant", "NoSuchOp"]
ATTRIBUTES = ["strides", "kernel_shape", "pads", "dilations", "group", "axis", "perm", "alpha",
              "beta", "transA", "transB", "epsilon", "auto_pad", "ceil_mode", "axes", "to",
              "keepdims", "mode", "value"]


class Chooser(Protocol):
    """Where the mutations get their choices: a seeded RNG here, hypothesis in the tests."""

    def integer(self, low: int, high: int) -> int:
        """A number in ``low .. high`` (inclusive)."""

    def choice(self, options: Sequence[T]) -> T:
        """One of ``options``."""


class RandomChooser:
    """Choices from ``random.Random(seed)``."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]


# -- seeds ---------------------------------------------------------------------------------------
def _model(nodes: list[onnx.NodeProto], shape: list[int | str], out: list[int | str],
           weights: dict[str, np.ndarray], name: str) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out)
    inits = [numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, k)
             for k, v in sorted(weights.items())]
    m = helper.make_model(helper.make_graph(nodes, name, [x], [y], inits),
                          opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def seed_models() -> dict[str, onnx.ModelProto]:
    """Small valid models that onnx2snn converts: the starting points of every mutation."""
    r = np.random.default_rng(0)
    cnn = _model([
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("AveragePool", ["p1"], ["p2"], name="pool2", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], name="fc", transB=1),
    ], ["N", 1, 8, 8], ["N", 10],
        {"w1": r.normal(size=(4, 1, 3, 3)), "b1": r.normal(size=4) * 0.1,
         "w2": r.normal(size=(10, 16)), "b2": np.zeros(10)}, "cnn")
    mlp = _model([
        helper.make_node("Reshape", ["x", "shape"], ["xf"], name="reshape"),
        helper.make_node("MatMul", ["xf", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
        helper.make_node("Clip", ["hb", "lo", "hi"], ["r"], name="clip"),
        helper.make_node("Gemm", ["r", "w2"], ["g"], name="fc2", transB=1, alpha=0.5),
        helper.make_node("Softmax", ["g"], ["y"], name="softmax", axis=1),
    ], ["N", 2, 3, 4], ["N", 5],
        {"w1": r.normal(size=(24, 16)), "b1": r.normal(size=16) * 0.1,
         "lo": np.array(0.0), "hi": np.array(6.0), "w2": r.normal(size=(5, 16)),
         "shape": np.array([-1, 24], np.int64)}, "mlp")
    res = _model([
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["n1"], name="bn1",
                         epsilon=1e-5),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", kernel_shape=[1, 1],
                         group=2),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("Concat", ["r2", "r1"], ["cat"], name="concat", axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["gp"], ["y"], name="flat"),
    ], ["N", 2, 6, 6], ["N", 8],
        {"w1": r.normal(size=(4, 2, 3, 3)), "g": np.ones(4), "b": np.zeros(4),
         "m": r.normal(size=4) * 0.1, "v": np.ones(4), "w2": r.normal(size=(4, 2, 1, 1))}, "res")
    # torch's flatten idiom (Shape -> Gather -> Unsqueeze -> Concat -> Reshape), layout ops, Pad
    layout = _model([
        helper.make_node("Transpose", ["x"], ["t"], name="transpose", perm=[0, 1, 2, 3]),
        helper.make_node("Pad", ["t", "pads"], ["pd"], name="pad", mode="constant"),
        helper.make_node("Conv", ["pd", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3],
                         strides=[2, 2], dilations=[1, 1], group=1),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Shape", ["r1"], ["sh"], name="shape"),
        helper.make_node("Gather", ["sh", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["r1", "target"], ["f"], name="reshape"),
        helper.make_node("MatMul", ["f", "w2"], ["g"], name="mm"),
        helper.make_node("Mul", ["g", "half"], ["y"], name="mul"),
    ], ["N", 2, 5, 5], ["N", 6],
        {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "w1": r.normal(size=(3, 2, 3, 3)),
         "b1": np.zeros(3), "zero": np.array(0, np.int64), "axes": np.array([0], np.int64),
         "minus1": np.array([-1], np.int64), "w2": r.normal(size=(27, 6)),
         "half": np.array(0.5)}, "layout")
    models = {"cnn": cnn, "mlp": mlp, "res": res, "layout": layout}
    for m in models.values():
        onnx.checker.check_model(m, full_check=True)
    return models


def input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    """Per-sample shape of a seed's input."""
    return tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])


def seed_data(model: onnx.ModelProto, n: int = 6) -> dict[str, np.ndarray]:
    """Inputs x (and labels y) that fit a seed model."""
    r = np.random.default_rng(1)
    classes = model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    return {"x": r.random((n, *input_shape(model))).astype(np.float32),
            "y": r.integers(0, classes, n)}


# -- model mutations -----------------------------------------------------------------------------
def _nodes_with_attributes(m: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in m.graph.node if n.attribute]


def mutate_attribute(c: Chooser, m: onnx.ModelProto) -> str:
    """Set an attribute to an odd value, remove it, or add one the op may not have."""
    node = c.choice(list(m.graph.node))
    what = c.choice(["value", "value", "remove", "add", "type"])
    if what == "add" or not node.attribute:
        name = c.choice(ATTRIBUTES)
        values = [c.choice(INTERESTING_INTS) for _ in range(c.integer(0, 4))]
        for a in list(node.attribute):
            if a.name == name:
                node.attribute.remove(a)
        node.attribute.append(helper.make_attribute(name, values if c.integer(0, 1) else
                                                    (values[0] if values else 0)))
        return f"{node.name}: add {name}={values}"
    a = c.choice(list(node.attribute))
    if what == "remove":
        node.attribute.remove(a)
        return f"{node.name}: remove {a.name}"
    if what == "type":
        a.type = c.integer(0, 14)
        return f"{node.name}: {a.name} type {a.type}"
    if a.type == onnx.AttributeProto.INTS:
        k = c.integer(0, max(0, len(a.ints) - 1)) if a.ints else 0
        v = c.choice(c.choice([INTERESTING_INTS, PLAUSIBLE_INTS, PLAUSIBLE_INTS]))
        if a.ints and c.integer(0, 2):
            a.ints[k] = v
        else:
            a.ints.append(v)
        return f"{node.name}: {a.name}={list(a.ints)}"
    if a.type == onnx.AttributeProto.INT:
        a.i = c.choice(c.choice([INTERESTING_INTS, PLAUSIBLE_INTS, PLAUSIBLE_INTS]))
        return f"{node.name}: {a.name}={a.i}"
    if a.type == onnx.AttributeProto.FLOAT:
        a.f = c.choice(INTERESTING_FLOATS)
        return f"{node.name}: {a.name}={a.f}"
    a.s = c.choice([b"", b"SAME_UPPER", b"VALID", b"\xff\xfe", b"NOTSET"])
    return f"{node.name}: {a.name}={a.s!r}"


def _value_infos(m: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    return list(m.graph.input) + list(m.graph.output)


def mutate_dims(c: Chooser, m: onnx.ModelProto) -> str:
    """Change, add or remove a dimension of an input, output or initializer."""
    if c.integer(0, 1):
        vi = c.choice(_value_infos(m))
        dims = vi.type.tensor_type.shape.dim
        what = c.choice(["value", "param", "remove", "add", "clear"])
        if what == "clear":
            vi.type.tensor_type.ClearField("shape")
        elif what == "add" or not dims:
            dims.add().dim_value = c.choice([1, 2, 3])
        elif what == "remove":
            del dims[c.integer(0, len(dims) - 1)]
        elif what == "param":
            dims[c.integer(0, len(dims) - 1)].dim_param = c.choice(["H", "seq", "N", ""])
        else:
            dims[c.integer(0, len(dims) - 1)].dim_value = c.choice(
                c.choice([INTERESTING_INTS, PLAUSIBLE_INTS, [6, 7, 8, 9, 16, 24]]))
        return f"dims of {vi.name}: {what}"
    t = c.choice(list(m.graph.initializer))
    if t.dims and c.integer(0, 1):
        t.dims[c.integer(0, len(t.dims) - 1)] = c.choice(INTERESTING_INTS)
    elif t.dims and c.integer(0, 1):
        del t.dims[c.integer(0, len(t.dims) - 1)]
    else:
        t.dims.append(c.choice([0, 1, 2]))
    return f"dims of initializer {t.name}: {list(t.dims)}"


def mutate_dtype(c: Chooser, m: onnx.ModelProto) -> str:
    """Change the element type of an input, output or initializer (keeping its bytes)."""
    new = c.integer(0, 30)
    if c.integer(0, 1):
        vi = c.choice(_value_infos(m))
        vi.type.tensor_type.elem_type = new
        return f"type of {vi.name}: {new}"
    t = c.choice(list(m.graph.initializer))
    if c.integer(0, 1):
        arr = numpy_helper.to_array(t)
        kind = c.choice(["int64", "float16", "int8", "uint8", "float64", "bool", "str"])
        if kind == "str":
            t.CopyFrom(helper.make_tensor(t.name, TensorProto.STRING, arr.shape,
                                          [b"a"] * arr.size))
        else:
            t.CopyFrom(numpy_helper.from_array(arr.astype(kind), t.name))
        return f"initializer {t.name} as {kind}"
    t.data_type = new
    return f"initializer {t.name}: data_type {new}"


def mutate_values(c: Chooser, m: onnx.ModelProto) -> str:
    """Fill weights with NaN, ±inf or huge numbers, or give them data of the wrong size."""
    t = c.choice(list(m.graph.initializer))
    arr = numpy_helper.to_array(t).copy()
    what = c.choice(["special", "special", "resize", "raw"])
    if what == "special" and arr.size:
        flat = arr.reshape(-1)
        k = c.integer(0, flat.size - 1)
        flat[k] = c.choice(INTERESTING_FLOATS) if arr.dtype.kind == "f" else \
            c.choice(c.choice([INTERESTING_INTS, PLAUSIBLE_INTS]))
        if c.integer(0, 1):
            flat[:] = flat[k]
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
        return f"initializer {t.name}[{k}] = {flat[k]}"
    if what == "resize":
        t.raw_data = t.raw_data[: c.integer(0, len(t.raw_data))] + b"\x01" * c.integer(0, 8)
        return f"initializer {t.name}: raw_data of {len(t.raw_data)} bytes"
    t.ClearField("raw_data")
    t.float_data.extend([1.0] * c.integer(0, 3))
    return f"initializer {t.name}: float_data instead of raw"


def mutate_opset(c: Chooser, m: onnx.ModelProto) -> str:
    """Another opset version for the default domain, or an extra domain."""
    if c.integer(0, 2):
        m.opset_import[0].version = c.choice([0, -1, 1, 6, 7, 9, 10, 11, 12, 17, 20, 28, 29, 99,
                                              2**62])
        return f"opset {m.opset_import[0].version}"
    m.opset_import.append(helper.make_opsetid(c.choice(["ai.onnx.ml", "com.microsoft",
                                                        "ai.onnx", ""]), c.integer(-1, 100)))
    return f"extra opset {m.opset_import[-1]}"


def mutate_structure(c: Chooser, m: onnx.ModelProto) -> str:
    """Delete, rewire or retype nodes; delete or duplicate inputs, outputs and initializers."""
    g = m.graph
    what = c.choice(["op", "op", "rewire", "delete_node", "delete_input", "delete_output",
                     "delete_init", "dup_output", "domain", "input_as_init", "clear_names"])
    node = c.choice(list(g.node))
    if what == "op":
        node.op_type = c.choice(OPS)
        return f"{node.name}: op {node.op_type}"
    if what == "rewire":
        names = ["x", ""] + [o for n in g.node for o in n.output] + \
            [t.name for t in g.initializer] + ["nowhere"]
        if node.input and c.integer(0, 2):
            node.input[c.integer(0, len(node.input) - 1)] = c.choice(names)
        else:
            node.input.append(c.choice(names))
        return f"{node.name}: inputs {list(node.input)}"
    if what == "delete_node":
        g.node.remove(node)
        return f"delete {node.name}"
    if what == "delete_input" and g.input:
        del g.input[0]
        return "delete the input"
    if what == "delete_output" and g.output:
        del g.output[0]
        return "delete the output"
    if what == "delete_init" and g.initializer:
        t = c.choice(list(g.initializer))
        g.initializer.remove(t)
        return f"delete initializer {t.name}"
    if what == "dup_output":
        g.output.append(c.choice(list(g.output) + list(g.input)) if g.output else g.input[0])
        return "duplicate an output"
    if what == "domain":
        node.domain = c.choice(["com.microsoft", "ai.onnx.ml", "x"])
        return f"{node.name}: domain {node.domain}"
    if what == "input_as_init" and g.input:
        g.initializer.append(numpy_helper.from_array(np.ones((1, 2), np.float32), g.input[0].name))
        return "the input is also an initializer"
    for n in g.node:
        n.name = ""
    return "unnamed nodes"


MODEL_MUTATIONS: list[Callable[[Chooser, onnx.ModelProto], str]] = [
    mutate_attribute, mutate_dims, mutate_dtype, mutate_values, mutate_opset, mutate_structure]


def mutate_bytes(c: Chooser, data: bytes) -> tuple[bytes, str]:
    """Flip, cut, insert or splice bytes of a serialized file."""
    b = bytearray(data)
    what = c.choice(["flip", "flip", "cut", "insert", "splice"])
    if not b:
        return bytes([c.integer(0, 255)]), "one byte"
    k = c.integer(0, len(b) - 1)
    if what == "flip":
        for _ in range(c.integer(1, 8)):
            b[c.integer(0, len(b) - 1)] = c.integer(0, 255)
    elif what == "cut":
        b = b[:k]
    elif what == "insert":
        b[k:k] = bytes(c.integer(0, 255) for _ in range(c.integer(1, 16)))
    else:
        j = c.integer(0, len(b) - 1)
        b[k:k] = b[j:j + c.integer(1, 64)]
    return bytes(b), f"bytes: {what} at {k}"


def mutated_model(c: Chooser, seeds: dict[str, onnx.ModelProto]) -> tuple[str, bytes, list[str]]:
    """A seed name, the mutated model's bytes and what was done to it."""
    name = c.choice(sorted(seeds))
    m = onnx.ModelProto()
    m.CopyFrom(seeds[name])
    steps = []
    for _ in range(c.integer(1, 3)):
        mutation = c.choice(MODEL_MUTATIONS)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")  # casts of odd values warn; they are the point
                steps.append(mutation(c, m))
        except Exception as e:  # a mutation that does not apply to this (already mutated) model
            steps.append(f"{mutation.__name__} skipped ({type(e).__name__})")
    data = m.SerializeToString()
    if c.integer(0, 3) == 0:
        data, step = mutate_bytes(c, data)
        steps.append(step)
    return name, data, steps


# -- data mutations ------------------------------------------------------------------------------
def npz_bytes(arrays: dict[str, Any], compressed: bool = False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def mutated_data(c: Chooser, model: onnx.ModelProto) -> tuple[bytes, str]:
    """Data file bytes for ``model``: valid, or with one thing wrong."""
    arrays: dict[str, Any] = seed_data(model)
    x = arrays["x"]
    what = c.choice(["valid", "valid", "valid", "shape", "dtype", "nan", "labels", "no_x",
                     "empty", "bytes", "npy", "header"])
    if what == "shape":
        arrays["x"] = np.zeros(tuple(c.integer(0, 5) for _ in range(c.integer(0, 5))),
                               np.float32)
    elif what == "dtype":
        kind = c.choice(["bool", "int8", "uint8", "float16", "float64", "complex64", "object",
                         "str", "datetime64[s]", "V4"])
        try:
            arrays["x"] = x.astype(kind)
        except (TypeError, ValueError):
            arrays["x"] = np.zeros(x.shape, kind)
    elif what == "nan":
        x.reshape(-1)[c.integer(0, x.size - 1)] = c.choice(INTERESTING_FLOATS)
    elif what == "labels":
        y = arrays["y"]
        arrays["y"] = c.choice([y + 100, -y - 1, y[:2], y.astype(np.float32), y.astype(object),
                                np.stack([y, y], 1), np.array([], np.int64)])
    elif what == "no_x":
        arrays = {"inputs": x}
    elif what == "empty":
        arrays["x"] = x[:0]
    elif what == "npy":
        buf = io.BytesIO()
        np.save(buf, x)
        return buf.getvalue(), "a .npy of x"
    try:
        data = npz_bytes(arrays, compressed=c.integer(0, 1) == 1)
    except (TypeError, ValueError):
        data = npz_bytes({"x": x})
    if what == "bytes":
        data, step = mutate_bytes(c, data)
        return data, step
    if what == "header":
        shape = str(tuple(x.shape)).encode()
        data = data.replace(shape, c.choice([b"(4000000000, 64)", b"(-1, 2)", b"()", b"(6,)"]),
                            1)
    return data, what


# -- running one case ------------------------------------------------------------------------------
@dataclass
class Case:
    """One fuzz input: a model file and two data files, and what was done to them."""

    seed: str
    model: bytes
    calib: bytes
    test: bytes
    steps: list[str] = field(default_factory=list)
    # after convert: (file in OUT/, byte position as a fraction, new bytes, cut there) or None
    out_edit: tuple[str, float, bytes, bool] | None = None

    def write(self, folder: Path) -> None:
        (folder / "model.onnx").write_bytes(self.model)
        (folder / "calib.npz").write_bytes(self.calib)
        (folder / "test.npz").write_bytes(self.test)

    def save(self, folder: Path, problems: list[str]) -> None:
        """Keep a failing case where ``--replay`` finds it again."""
        folder.mkdir(parents=True, exist_ok=True)
        self.write(folder)
        (folder / "steps.txt").write_text("\n".join(self.steps + problems) + "\n")
        if self.out_edit is not None:
            name, where, new, cut = self.out_edit
            (folder / "out_edit.json").write_text(json.dumps([name, where, new.hex(), cut]))

    @classmethod
    def load(cls, folder: Path) -> Case:
        """A case saved by ``save``."""
        edit = None
        if (folder / "out_edit.json").exists():
            name, where, new, cut = json.loads((folder / "out_edit.json").read_text())
            edit = (name, where, bytes.fromhex(new), cut)
        return cls(folder.name, (folder / "model.onnx").read_bytes(),
                   (folder / "calib.npz").read_bytes(), (folder / "test.npz").read_bytes(),
                   (folder / "steps.txt").read_text().splitlines(), edit)


def make_case(c: Chooser, seeds: dict[str, onnx.ModelProto]) -> Case:
    """A mutated model, or a seed model with mutated data files."""
    if c.integer(0, 3):
        name, data, steps = mutated_model(c, seeds)
        return Case(name, data, npz_bytes(seed_data(seeds[name])),
                    npz_bytes(seed_data(seeds[name])), steps)
    name = c.choice(sorted(seeds))
    if c.integer(0, 2) == 0:  # a valid conversion whose OUT/ is then damaged
        data = seed_data(seeds[name])
        edit = (c.choice(OUT_FILES), c.integer(0, 1000) / 1000,
                c.choice([b"", b"\x00", b"\xff" * 4, b"{", b"[]", b'"..', b"null", b"-1e999"]),
                c.integer(0, 3) == 0)
        return Case(name, seeds[name].SerializeToString(), npz_bytes(data), npz_bytes(data),
                    [f"OUT/{edit[0]} edited at {edit[1]:.3f}: {edit[2]!r}, cut {edit[3]}"], edit)
    calib, s1 = mutated_data(c, seeds[name])
    test, s2 = mutated_data(c, seeds[name])
    return Case(name, seeds[name].SerializeToString(), calib, test,
                [f"calib: {s1}", f"test: {s2}"])


OUT_FILES = ["onnx2snn.json", "network.snn", "source.onnx"]


def edit_output(folder: Path, edit: tuple[str, float, bytes, bool]) -> None:
    """Damage one file of a converted OUT/ folder (what evaluate and emit then read)."""
    name, where, new, cut = edit
    path = folder / "out" / name
    data = path.read_bytes()
    k = int(where * len(data))
    path.write_bytes(data[:k] + new + (b"" if cut else data[k + len(new):]))


COMMANDS: list[tuple[str, list[str], str | None]] = [
    # (name, arguments, the output folder a successful run leaves)
    ("inspect", ["inspect", "model.onnx", "--json"], None),
    ("convert", ["convert", "model.onnx", "--calib", "calib.npz", "-o", "out", "-q",
                 "--calib-samples", "4"], "out"),
    ("evaluate", ["evaluate", "out", "--data", "test.npz", "-T", "1,3", "-q", "--json",
                  "--plot", "plot.png"], "plot.png"),
    ("emit", ["emit", "out", "--target", "numpy", "-o", "out2"], "out2"),
]
INPUTS = {"model.onnx", "calib.npz", "test.npz"}


def run_commands(folder: Path, out_edit: tuple[str, float, bytes, bool] | None = None
                 ) -> dict[str, Any]:
    """Run every command in ``folder`` (the current directory); what each returned, stray files.

    ``out_edit`` damages a file of OUT/ after convert, before evaluate and emit read it.
    """
    from click.testing import CliRunner

    from onnx2snn.cli.main import main

    os.chdir(folder)
    scratch = folder / ".tmp"  # the temporary folder of everything the commands run: must stay empty
    scratch.mkdir()
    os.environ["TMPDIR"] = str(scratch)
    tempfile.tempdir = str(scratch)
    runner = CliRunner()
    results: dict[str, Any] = {}
    allowed = set(INPUTS)
    for name, args, output in COMMANDS:
        if name in ("evaluate", "emit") and results.get("convert", {}).get("code") != 0:
            break
        r = runner.invoke(main, ["-v", *args])  # -v: the traceback of an error goes to stderr
        lines = r.stderr.strip().splitlines()
        internal = r.exit_code == 1 or any("internal error" in line for line in lines) or (
            r.exception is not None and not isinstance(r.exception, SystemExit))
        results[name] = {"code": r.exit_code, "internal": internal,
                         "message": lines[-1] if lines else "",
                         "traceback": r.stderr if internal else ""}
        if r.exit_code == 0 and output:
            allowed.add(output)
        if name == "convert" and r.exit_code == 0 and out_edit is not None:
            edit_output(folder, out_edit)
    stray = sorted(str(p.relative_to(folder)) for p in folder.iterdir()
                   if p.name not in allowed and p != scratch)
    stray += sorted(str(p.relative_to(folder)) for p in scratch.rglob("*"))
    return {"commands": results, "stray": stray}


def run_case(case: Case, timeout: float) -> dict[str, Any]:
    """Run ``case`` in a forked child with a memory and time limit; the child's report."""
    with tempfile.TemporaryDirectory(prefix="onnx2snn-fuzz-") as tmp:
        folder = Path(tmp)
        case.write(folder)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 0
            try:
                os.close(read)
                os.setpgid(0, 0)
                soft = _address_space() + MEMORY_LIMIT
                resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
                report = run_commands(folder, case.out_edit)
                with os.fdopen(write, "w") as f:
                    json.dump(report, f)
            except BaseException:
                traceback.print_exc()
                code = 70
            finally:
                os._exit(code)
        os.close(write)
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read)
            return {"hang": True}
        with os.fdopen(read) as f:
            text = f.read()
        if status is not None and os.WIFSIGNALED(status):
            return {"crash": f"signal {os.WTERMSIG(status)}"}
        if not text:
            return {"crash": f"the child exited {os.waitstatus_to_exitcode(status or 0)} "
                             "without a report"}
        return dict(json.loads(text))


def _address_space() -> int:
    """Bytes of virtual memory this process maps now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def problems_of(report: dict[str, Any]) -> list[str]:
    """What is wrong in one case's report: internal errors, crashes, hangs, stray files."""
    out = []
    if report.get("hang"):
        out.append("hang")
    if report.get("crash"):
        out.append(f"crash: {report['crash']}")
    for name, r in report.get("commands", {}).items():
        if r["internal"]:
            out.append(f"internal error in {name}: {r['message']}")
    if report.get("stray"):
        out.append(f"stray files: {report['stray']}")
    return out


def seed_cases(seeds: dict[str, onnx.ModelProto]) -> list[Case]:
    """The unmutated seeds with valid data: every command must succeed on them (the control)."""
    return [Case(name, m.SerializeToString(), npz_bytes(seed_data(m)), npz_bytes(seed_data(m)),
                 ["unmutated"]) for name, m in sorted(seeds.items())]


def control_failures(seeds: dict[str, onnx.ModelProto], timeout: float) -> list[str]:
    """Why the control cases fail (empty when every command succeeds on every seed)."""
    out = []
    for case in seed_cases(seeds):
        report = run_case(case, timeout)
        codes = {k: r["code"] for k, r in report.get("commands", {}).items()}
        if codes != {name: 0 for name, _, _ in COMMANDS} or problems_of(report):
            out.append(f"seed {case.seed}: {codes or report}")
    return out


def prepare_parent() -> None:
    """Import what every child needs once, so that a fork starts warm."""
    import onnxruntime  # noqa: F401

    import onnx2snn.cli.main  # noqa: F401


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="how long to fuzz")
    ap.add_argument("--inputs", type=int, default=None, help="stop after this many inputs")
    ap.add_argument("--seed", type=int, default=0, help="seed of the mutations")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a case hangs")
    ap.add_argument("--save", type=Path, default=None,
                    help="write every failing case (model.onnx, calib.npz, test.npz) here")
    ap.add_argument("--replay", type=Path, default=None,
                    help="run the cases saved by --save in this folder again and say which fail")
    args = ap.parse_args()
    prepare_parent()
    if args.replay:
        folders = sorted(p for p in args.replay.iterdir() if (p / "model.onnx").exists())
        still = 0
        for folder in folders:
            problems = problems_of(run_case(Case.load(folder), args.timeout))
            still += bool(problems)
            print(f"{folder.name}: {'; '.join(problems) or 'fixed'}")
        print(f"replayed {len(folders)} saved inputs: {still} still fail")
        return 1 if still else 0
    seeds = seed_models()
    broken = control_failures(seeds, args.timeout)
    if broken:
        print("the unmutated seeds do not convert, so the fuzzer tests nothing: " + "; ".join(broken))
        return 2
    chooser = RandomChooser(args.seed)
    start = time.monotonic()
    tried, failing = 0, 0
    counts: Counter[str] = Counter()
    codes: dict[str, Counter[int]] = {name: Counter() for name, _, _ in COMMANDS}
    while time.monotonic() - start < args.seconds and (args.inputs is None or tried < args.inputs):
        case = make_case(chooser, seeds)
        report = run_case(case, args.timeout)
        tried += 1
        for name, r in report.get("commands", {}).items():
            codes[name][r["code"]] += 1
        problems = problems_of(report)
        for p in problems:
            counts[p.split(":")[0]] += 1
        if problems:
            failing += 1
            print(f"input {tried} ({case.seed}; {'; '.join(case.steps)}): {'; '.join(problems)}",
                  file=sys.stderr)
            for r in report.get("commands", {}).values():
                if r.get("traceback"):
                    print(r["traceback"], file=sys.stderr)
            if args.save:
                case.save(args.save / f"case_{tried:05d}", problems)
    elapsed = time.monotonic() - start
    print(f"inputs tried: {tried} in {elapsed:.0f} s ({tried / elapsed:.1f}/s), seed {args.seed}")
    for name, c in codes.items():
        print(f"  {name:8s} exit codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(c.items())))
    for what in ("internal error in inspect", "internal error in convert",
                 "internal error in evaluate", "internal error in emit", "crash", "hang",
                 "stray files"):
        print(f"{what}: {counts[what]}")
    print(f"failing inputs: {failing}")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
