"""Malformed or unfeedable models: one error line naming node, attribute or tensor and the value.

One case per class of issue 13, each driven through the CLI (``inspect`` and ``convert``) in an
isolated folder: the exit code is the documented one (3: the model is malformed; 4: valid ONNX
that onnx2snn cannot feed), stderr is one ``onnx2snn: error:`` line holding the words that say
what is wrong (exit code 4: listed with the unsupported nodes, also in ``inspect --json``), and
nothing is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnx2snn.cli.main import main
from onnx2snn.errors import InputFileError, UnsupportedModelError
from onnx2snn.frontend import convert_model, load_model, onnx_to_ann
from onnx2snn.frontend.validate import checker_message

KERNEL = (4, 1, 3, 3)


def cnn(*, strides: int = 1, dilations: int = 1, kernel: tuple[int, ...] = KERNEL,
        pool: str = "MaxPool", pool_kernel: int = 2, weight: onnx.TensorProto | None = None,
        bias: np.ndarray | None = None, x_type: int = TensorProto.FLOAT,
        x_shape: tuple[int | str, ...] = ("N", 1, 8, 8), opset: int = 13) -> onnx.ModelProto:
    """Conv -> Relu -> pool -> Flatten, valid with the defaults; each keyword breaks one thing."""
    x = helper.make_tensor_value_info("x", x_type, list(x_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "F"])
    w = weight if weight is not None else numpy_helper.from_array(
        np.random.default_rng(0).normal(size=kernel).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(kernel[0], np.float32) if bias is None else bias, "B")
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv1",
                              strides=[strides] * 2, dilations=[dilations] * 2),
             helper.make_node("Relu", ["c"], ["r"], name="relu1"),
             helper.make_node(pool, ["r"], ["p"], name="pool1", kernel_shape=[pool_kernel] * 2),
             helper.make_node("Flatten", ["p"], ["y"], name="flat")]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w, b]),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def typed_weight(data_type: int) -> onnx.TensorProto:
    n = int(np.prod(KERNEL))
    values: list = [b"w"] * n if data_type == TensorProto.STRING else [1] * n
    return helper.make_tensor("W", data_type, KERNEL, values)


def without_inputs() -> onnx.ModelProto:
    m = cnn()
    const = numpy_helper.from_array(np.ones((1, 1, 8, 8), np.float32))
    m.graph.node.insert(0, helper.make_node("Constant", [], ["x"], name="const", value=const))
    del m.graph.input[:]
    return m


def uint8_input_cast() -> onnx.ModelProto:
    """Valid ONNX (the input is cast to float), but onnx2snn feeds float32 samples."""
    m = cnn(x_type=TensorProto.UINT8)
    m.graph.node.insert(0, helper.make_node("Cast", ["x"], ["xf"], name="cast",
                                            to=TensorProto.FLOAT))
    m.graph.node[1].input[0] = "xf"
    return m


def weight(values: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(values.astype(np.float32), "W")


NAN_W = np.zeros(KERNEL)
NAN_W[1, 0, 2, 1] = np.nan

# case -> (model maker, exit code, words the message must hold)
CASES: dict[str, tuple[Callable[[], onnx.ModelProto], int, list[str]]] = {
    # crashed with "internal error" before
    "conv_stride_0": (lambda: cnn(strides=0), 3,
                      ["Conv node 'conv1'", "strides = [0, 0]", "at least 1"]),
    "conv_kernel_dim_0": (lambda: cnn(kernel=(4, 1, 0, 3)), 3,
                          ["Conv node 'conv1'", "initializer 'W'", "[4, 1, 0, 3]", "empty weight"]),
    "avgpool_kernel_negative": (lambda: cnn(pool="AveragePool", pool_kernel=-2), 3,
                                ["AveragePool node 'pool1'", "kernel_shape = [-2, -2]"]),
    "string_weight": (lambda: cnn(weight=typed_weight(TensorProto.STRING)), 3,
                      ["initializer 'W'", "STRING"]),
    "input_dim_negative": (lambda: cnn(x_shape=("N", 1, -8, 8)), 3,
                           ["input 'x'", "dimension -8 on axis 2"]),
    "input_dim_zero": (lambda: cnn(x_shape=("N", 1, 0, 8)), 4,
                       ["[nodes: x]", "size 0 on axis 2"]),
    "input_dim_symbolic": (lambda: cnn(x_shape=("N", 1, "H", 8)), 4,
                           ["[nodes: x]", "symbolic dimension 'H' on axis 2",
                            "export with a fixed size"]),
    "no_inputs": (without_inputs, 4, ["the model has no inputs"]),
    # accepted silently before
    "nan_weight": (lambda: cnn(weight=weight(NAN_W)), 3,
                   ["initializer 'W'", "1 NaN value", "(1, 0, 2, 1)", "must be finite"]),
    "inf_bias": (lambda: cnn(bias=np.array([0, np.inf, -np.inf, 0], np.float32)), 3,
                 ["initializer 'B'", "2 ±inf value", "(1,)"]),
    "int64_weight": (lambda: cnn(weight=typed_weight(TensorProto.INT64)), 3,
                     ["Conv node 'conv1'", "initializer 'W'", "INT64", "float32 weights"]),
    "float16_weight": (lambda: cnn(weight=typed_weight(TensorProto.FLOAT16)), 3,
                       ["Conv node 'conv1'", "initializer 'W'", "FLOAT16"]),
    "bfloat16_weight": (lambda: cnn(weight=typed_weight(TensorProto.BFLOAT16)), 3,
                        ["Conv node 'conv1'", "initializer 'W'", "BFLOAT16"]),
    "int8_input": (lambda: cnn(x_type=TensorProto.INT8), 3,
                   ["node 'conv1'", "input 'x' has element type INT8", "float32 input"]),
    "uint8_input": (lambda: cnn(x_type=TensorProto.UINT8), 3,
                    ["input 'x' has element type UINT8"]),
    "uint8_input_cast": (uint8_input_cast, 4, ["element type UINT8", "float32 input"]),
    "dilation_0": (lambda: cnn(dilations=0), 3, ["Conv node 'conv1'", "dilations = [0, 0]"]),
    "maxpool_kernel_0": (lambda: cnn(pool_kernel=0), 3,
                         ["MaxPool node 'pool1'", "kernel_shape = [0, 0]"]),
    "opset_99": (lambda: cnn(opset=99), 3, ["opset 99", "ai.onnx", "1..28"]),
}


def test_the_valid_model_converts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: without a defect, the same model converts (so each case fails for its defect)."""
    monkeypatch.chdir(tmp_path)
    onnx.save(cnn(), "m.onnx")
    np.savez("calib.npz", x=np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32))
    result = CliRunner().invoke(main, ["convert", "m.onnx", "--calib", "calib.npz", "-o", "out",
                                       "-q"])
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_model_one_line_documented_code_nothing_written(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make, code, words = CASES[case]
    monkeypatch.chdir(tmp_path)
    onnx.save(make(), "m.onnx")
    np.savez("calib.npz", x=np.zeros((4, 1, 8, 8), np.float32))
    before = sorted(os.listdir("."))
    for args in (["inspect", "m.onnx"], ["inspect", "m.onnx", "--json"],
                 ["convert", "m.onnx", "--calib", "calib.npz", "-o", "out", "-q"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == code, (args, result.exit_code, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith("onnx2snn: error: ") and "internal error" not in result.stderr
        if code == 3:  # malformed: one line naming the file, nothing on stdout
            assert len(lines) == 1 and lines[0].startswith("onnx2snn: error: m.onnx: "), lines
            assert result.stdout == ""
            text = lines[0]
        elif "--json" in args:  # cannot be fed: listed with the unsupported nodes
            problems = json.loads(result.stdout)["unsupported"]
            assert [p["op"] for p in problems] == ["Input"], problems
            text = f"{problems[0]['reason']} [nodes: {problems[0]['node']}]"
        else:  # convert lists them on stderr; inspect's table wraps them (read from --json)
            text = result.stderr if args[0] == "convert" else " ".join(words)
        for w in words:
            assert w in text, (w, text)
        assert sorted(os.listdir(".")) == before


def test_library_raises_the_documented_classes() -> None:
    with pytest.raises(InputFileError, match="strides"):
        load_model(cnn(strides=0))
    loaded = load_model(cnn(x_shape=("N", 1, "H", 8)))  # valid ONNX: loads
    with pytest.raises(UnsupportedModelError, match="symbolic") as info:
        convert_model(loaded)
    assert info.value.problems[0][:2] == ("Input", "x") and info.value.exit_code == 4


def test_clip_bounds_may_be_infinite() -> None:
    """±inf as a Clip bound means "no bound" and is accepted; elsewhere it is refused."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    lo = numpy_helper.from_array(np.array(0, np.float32), "lo")
    hi = numpy_helper.from_array(np.array(np.inf, np.float32), "hi")
    node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")
    m = helper.make_model(helper.make_graph([node], "g", [x], [y], [lo, hi]),
                          opset_imports=[helper.make_opsetid("", 13)])
    load_model(m)
    m.graph.node.append(helper.make_node("Add", ["y", "hi"], ["z"], name="add"))
    m.graph.output[0].name = "z"
    with pytest.raises(InputFileError, match="initializer 'hi' holds 1 ±inf"):
        load_model(m)


def test_model_without_outputs_and_duplicate_outputs() -> None:
    m = cnn()
    del m.graph.output[:]
    with pytest.raises(UnsupportedModelError, match="the model has no outputs"):
        onnx_to_ann(m)
    m = cnn()
    m.graph.output.append(m.graph.output[0])
    with pytest.raises(InputFileError, match="output 'y' is listed 2 times"):
        load_model(m)


def test_checker_messages_become_one_line_naming_the_node() -> None:
    text = ("[ShapeInferenceError] Inference error(s): (op_type:Conv, node name: conv1): "
            "[ShapeInferenceError] Attribute strides must only contain positive values\n"
            "(op_type:Relu, node name: relu1): [TypeInferenceError] Input 0 expected to have type")
    assert checker_message(text, full=True) == (
        "shape and type inference rejects node 'conv1' (Conv): Attribute strides must only "
        "contain positive values; the model is not valid ONNX, re-export it")
    text = ("Node(c1) with schema(::Conv:11) has input size 1 not in range [min=2, max=3].\n\n"
            "==> Context: Bad node spec for node. Name: c1 OpType: Conv")
    assert checker_message(text, full=False) == (
        "the ONNX checker rejects the model: node 'c1' (Conv): Node(c1) with schema(::Conv:11) "
        "has input size 1 not in range [min=2, max=3].")


def test_checker_rejection_through_the_loader() -> None:
    m = cnn()
    m.graph.node[0].input[1] = "undefined_weight"
    with pytest.raises(InputFileError, match=r"the ONNX checker rejects the model: node 'conv1' "
                                             r"\(Conv\)"):
        load_model(m)


def test_external_data_location_that_is_a_folder(tmp_path: Path) -> None:
    m = cnn()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "weights"
    (tmp_path / "weights").mkdir()
    onnx.save(m, tmp_path / "m.onnx")
    with pytest.raises(InputFileError, match="external data location 'weights' of tensor 'W' is "
                                             "a folder, not a file"):
        load_model(tmp_path / "m.onnx")


def test_attributes_must_fit_the_rank_of_their_input() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 5, 5])
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="tr", perm=[0, 1, 2, 3]),
             helper.make_node("Relu", ["t"], ["y"], name="relu")]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(InputFileError, match=r"Transpose node 'tr': attribute perm = "
                                             r"\[0, 1, 2, 3\] is not a permutation of the 5 "
                                             r"axes of its input 'x'"):
        load_model(m)
    m = cnn()
    m.graph.node[3].attribute.append(helper.make_attribute("axis", 5))
    with pytest.raises(InputFileError, match=r"node 'flat' .*(5.*axis|axis.*5)"):  # inference
        load_model(m)


def test_an_element_type_onnx_does_not_define() -> None:
    m = cnn()
    m.graph.initializer[1].data_type = 30
    with pytest.raises(InputFileError, match="initializer 'B' has element type 30, which ONNX "
                                             "does not define"):
        load_model(m)


def test_out_of_memory_is_not_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose activations do not fit (e.g. a Pad of 10^5) ends with exit 4 and says so."""
    import onnx2snn.inspect

    def huge(*args: object, **kwargs: object) -> None:
        raise MemoryError("Unable to allocate 2.33 TiB for an array")

    monkeypatch.setattr(onnx2snn.inspect, "inspect_model", huge)
    result = CliRunner().invoke(main, ["inspect", "m.onnx"])
    assert result.exit_code == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx2snn: error: out of memory: Unable to "
                                                   "allocate 2.33 TiB")
    assert "internal error" not in result.stderr


def test_a_damaged_graph_file_is_an_input_error(tmp_path: Path) -> None:
    """network.snn is an .npz: damaged bytes anywhere give InputFileError or load."""
    from onnx2snn.ir import load_graph, save_graph

    save_graph(onnx_to_ann(cnn()), tmp_path / "g.snn")
    data = (tmp_path / "g.snn").read_bytes()
    refused = 0
    for k in range(0, len(data), max(1, len(data) // 97)):
        (tmp_path / "bad.snn").write_bytes(data[:k] + b"\xff\xff\xff\xff" + data[k + 4:])
        try:
            load_graph(tmp_path / "bad.snn")
        except InputFileError as e:
            assert str(e).startswith(f"{tmp_path / 'bad.snn'}: ")
            refused += 1
    assert refused > 50


def test_integer_constant_data_of_the_wrong_size() -> None:
    m = cnn()
    m.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int64), "zero"))
    m.graph.initializer[-1].raw_data = b"\0" * 9  # 9 bytes cannot hold int64 values
    m.graph.node.append(helper.make_node("Add", ["zero", "zero"], ["z"], name="add"))
    with pytest.raises(InputFileError, match="initializer 'zero' has data that does not fit its "
                                             r"shape \[\] and type INT64"):
        load_model(m)
