"""The IR: frozen nodes with read-only arrays, validation that raises IRError, one-file save/load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2snn.errors import InputFileError, IRError
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.ir import (
    Add,
    Affine,
    AvgPool,
    ChannelPermute,
    Concat,
    Conv,
    Dense,
    Graph,
    Input,
    MaxPool,
    Pad,
    Relu,
    Reshape,
    load_graph,
    save_graph,
)
from onnx2snn.ir.serialize import graph_from_bytes, graph_to_bytes

RNG = np.random.default_rng(0)


def small_graph() -> Graph:
    """A graph with every ANN node kind, built by hand."""
    w = RNG.normal(size=(4, 2, 3, 3))
    nodes = [
        Input(name="x", inputs=(), shape=(2, 6, 6)),
        Pad(name="pad", inputs=("x",), shape=(2, 8, 8), pads=(1, 1, 1, 1)),
        Conv(name="conv", inputs=("pad",), shape=(4, 6, 6), weight=w, bias=RNG.normal(size=4)),
        Relu(name="relu", inputs=("conv",), shape=(4, 6, 6), ceiling=2.5),
        Affine(name="bn", inputs=("relu",), shape=(4, 6, 6), scale=RNG.normal(size=(4, 1, 1)),
               shift=RNG.normal(size=(4, 1, 1))),
        MaxPool(name="mp", inputs=("bn",), shape=(4, 3, 3), kernel=(2, 2), strides=(2, 2)),
        AvgPool(name="ap", inputs=("bn",), shape=(4, 3, 3), kernel=(2, 2), strides=(2, 2)),
        Add(name="add", inputs=("mp", "ap"), shape=(4, 3, 3)),
        ChannelPermute(name="perm", inputs=("add",), shape=(4, 3, 3),
                       perm=np.array([2, 0, 3, 1])),
        Concat(name="cat", inputs=("perm", "mp"), shape=(8, 3, 3), axis=0),
        Reshape(name="flat", inputs=("cat",), shape=(72,)),
        Dense(name="fc", inputs=("flat",), shape=(5,), weight=RNG.normal(size=(5, 72))),
    ]
    return Graph(tuple(nodes), ("fc",), {"stage": "ann", "dropped": ["Softmax s"], "opset": 13})


def assert_same_graph(a: Graph, b: Graph) -> None:
    assert [n.kind for n in a] == [n.kind for n in b]
    assert a.outputs == b.outputs
    assert dict(a.meta) == dict(b.meta)
    for x, y in zip(a, b):
        assert type(x) is type(y)
        assert (x.name, x.inputs, x.shape, x.origin) == (y.name, y.inputs, y.shape, y.origin)
        assert x.attributes() == y.attributes(), x.name
        ax, ay = x.arrays(), y.arrays()
        assert ax.keys() == ay.keys(), x.name
        for k in ax:
            assert ax[k].dtype == ay[k].dtype and ax[k].shape == ay[k].shape
            np.testing.assert_array_equal(ax[k], ay[k])


# -- save / load ---------------------------------------------------------------------------------
def test_round_trip_hand_built_graph(tmp_path: Path) -> None:
    g = small_graph()
    save_graph(g, tmp_path / "g.o2s")
    h = load_graph(tmp_path / "g.o2s")
    assert_same_graph(g, h)
    x = RNG.normal(size=(2, 2, 6, 6))
    from onnx2snn.ann_executor import run_ann

    np.testing.assert_array_equal(run_ann(g, x)["fc"], run_ann(h, x)["fc"])


def test_round_trip_converted_model(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    model = root / "models" / "digits_resnet.onnx"
    if not model.exists():
        pytest.skip("models/ not present")
    g = onnx_to_ann(model)
    save_graph(g, tmp_path / "r.o2s")
    assert_same_graph(g, load_graph(tmp_path / "r.o2s"))


def test_bytes_round_trip_is_deterministic() -> None:
    g = small_graph()
    assert graph_to_bytes(g) == graph_to_bytes(graph_from_bytes(graph_to_bytes(g)))


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    save_graph(small_graph(), tmp_path / "g.o2s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.o2s"]


# -- immutability --------------------------------------------------------------------------------
def test_arrays_are_read_only_and_copied() -> None:
    w = RNG.normal(size=(3, 4))
    d = Dense(name="d", inputs=("x",), shape=(3,), weight=w)
    assert not d.weight.flags.writeable
    with pytest.raises(ValueError):
        d.weight[0, 0] = 1.0
    w[0, 0] = 123.0  # the caller's array stays theirs
    assert d.weight[0, 0] != 123.0
    for n in small_graph():
        for name, arr in n.arrays().items():
            assert not arr.flags.writeable, (n.name, name)


def test_loaded_arrays_are_read_only(tmp_path: Path) -> None:
    save_graph(small_graph(), tmp_path / "g.o2s")
    for n in load_graph(tmp_path / "g.o2s"):
        for arr in n.arrays().values():
            assert not arr.flags.writeable


def test_nodes_and_graph_are_frozen() -> None:
    g = small_graph()
    with pytest.raises(AttributeError):
        g.nodes[0].name = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        g.meta["stage"] = "snn"  # type: ignore[index]
    assert isinstance(g.nodes, tuple)


def test_replace_keeps_arrays_frozen() -> None:
    d = Dense(name="d", inputs=("x",), shape=(3,), weight=np.ones((3, 4)))
    e = d.replace(weight=np.zeros((3, 4)))
    assert not e.weight.flags.writeable and d.weight[0, 0] == 1.0


# -- validation ----------------------------------------------------------------------------------
def _with(nodes: list, outputs: tuple[str, ...] = ("out",)) -> Graph:
    return Graph(tuple(nodes), outputs)


X = Input(name="x", inputs=(), shape=(4,))


def test_bad_shape_raises_irerror() -> None:
    with pytest.raises(IRError, match="declares shape"):
        _with([X, Relu(name="out", inputs=("x",), shape=(5,))])


def test_weight_that_does_not_fit_raises_irerror() -> None:
    with pytest.raises(IRError, match="does not fit"):
        _with([X, Dense(name="out", inputs=("x",), shape=(3,), weight=np.ones((3, 5)))])


def test_dangling_input_raises_irerror() -> None:
    with pytest.raises(IRError, match="not produced before it"):
        _with([X, Relu(name="out", inputs=("nowhere",), shape=(4,))])


def test_input_produced_later_raises_irerror() -> None:
    with pytest.raises(IRError, match="not produced before it"):
        _with([X, Relu(name="out", inputs=("r",), shape=(4,)),
               Relu(name="r", inputs=("x",), shape=(4,))])


def test_duplicate_names_raise_irerror() -> None:
    with pytest.raises(IRError, match="two nodes are named"):
        _with([X, Relu(name="out", inputs=("x",), shape=(4,)),
               Relu(name="out", inputs=("out",), shape=(4,))])


def test_missing_output_and_no_outputs_raise_irerror() -> None:
    with pytest.raises(IRError, match="not a node"):
        _with([X, Relu(name="r", inputs=("x",), shape=(4,))], ("nope",))
    with pytest.raises(IRError, match="no outputs"):
        _with([X, Relu(name="r", inputs=("x",), shape=(4,))], ())


def test_wrong_number_of_ports_raises_irerror() -> None:
    with pytest.raises(IRError, match="takes ports"):
        Relu(name="r", inputs=("x", "y"), shape=(4,))
    with pytest.raises(IRError, match="takes ports"):
        Add(name="a", inputs=(), shape=(4,))


def test_validation_survives_python_O() -> None:
    """Validation must not rely on assert (stripped by python -O)."""
    code = ("from onnx2snn.ir import Graph, Input, Relu\n"
            "from onnx2snn.errors import IRError\n"
            "try:\n"
            "    Graph((Input(name='x', inputs=(), shape=(4,)),"
            " Relu(name='r', inputs=('x',), shape=(5,))), ('r',))\n"
            "except IRError:\n"
            "    print('raised')\n")
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "raised"


# -- corrupt files -------------------------------------------------------------------------------
def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        load_graph(tmp_path / "none.o2s")


@pytest.mark.parametrize("damage", ["text", "truncated", "not_a_graph", "bad_json", "bad_kind",
                                    "inconsistent", "dangling", "bad_attribute",
                                    "newer_version"])
def test_corrupt_file_is_input_error(tmp_path: Path, damage: str) -> None:
    good = graph_to_bytes(small_graph())
    path = tmp_path / "g.o2s"
    if damage == "text":
        path.write_text("hello\n")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "not_a_graph":
        np.savez(path.with_suffix(".npz"), a=np.ones(3))
        path = path.with_suffix(".npz")
    else:
        import io
        import json

        with np.load(io.BytesIO(good)) as z:
            arrays = {k: z[k] for k in z.files}
        doc = json.loads(bytes(arrays["__graph__"]).decode())
        if damage == "bad_json":
            raw = b"{not json"
        else:
            if damage == "bad_kind":
                doc["nodes"][1]["kind"] = "no_such_kind"
            elif damage == "inconsistent":
                doc["nodes"][3]["shape"] = [99]
            elif damage == "dangling":
                doc["nodes"][3]["inputs"] = ["gone"]
            elif damage == "bad_attribute":
                doc["nodes"][2]["attributes"]["no_such_field"] = 1
            else:
                doc["version"] = 999
            raw = json.dumps(doc).encode()
        arrays["__graph__"] = np.frombuffer(raw, dtype=np.uint8)
        np.savez(path.with_suffix(".npz"), **arrays)
        path = path.with_suffix(".npz")
    with pytest.raises(InputFileError):
        load_graph(path)


def test_converted_graph_from_onnx_is_valid_and_named_after_onnx_nodes() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)
    m = helper.make_model(helper.make_graph([node], "g", [x], [y], [w]),
                          opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    g = onnx_to_ann(m)
    assert [n.name for n in g] == ["x", "fc"] and g["fc"].origin == ("fc",)
    assert g.meta["stage"] == "ann" and g.meta["opset"] == 13
