"""LeakyRelu and PRelu through pairs of ReLU populations (``onnx2snn.convert.signed``).

* the rewrite is exact: the rewritten ANN equals onnxruntime on the original model, for every
  reader the rewrite handles (Conv, grouped Conv, Gemm, pooling, Flatten, residual Add, Concat,
  another activation, the graph output) and for slopes below 0, above 1 and equal to 0;
* refusals name the nodes: a PRelu slope that varies over positions, max pooling of a leaky ReLU
  under ``--maxpool gate``, readers the pair cannot feed;
* the bundled ``digits_cnn_leaky`` and ``digits_resnet_prelu``: ANN accuracy as documented, the
  SNN within 1 pp of it at T = 32 in the reference simulator, the NIR file read back with
  ``nir.read`` and run, the Loihi quantization in the fixed-point reference (the Lava run of
  ``digits_cnn_leaky``, spike for spike against that reference, is in tests/test_loihi_lava.py).
"""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2snn.ann_executor import run_ann
from onnx2snn.backends.numpy import simulate
from onnx2snn.convert import Recipe, convert
from onnx2snn.convert.pipeline import prepare_ann
from onnx2snn.convert.profiles import profile_for
from onnx2snn.errors import PassError, UnsupportedModelError
from onnx2snn.evaluate import accuracy
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.oracle import onnxruntime_outputs

MODELS = Path(__file__).resolve().parents[1] / "models"


class Net:
    """A small ONNX graph written op by op; ``finish`` checks it and returns the model."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, value: Any) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def op(self, op: str, *inputs: str, name: str | None = None, **attrs: Any) -> str:
        name = name or f"{op}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, list(inputs), [name + ":0"], name=name, **attrs))
        return name + ":0"

    def conv(self, x: str, cin: int, cout: int, groups: int = 1, **attrs: Any) -> str:
        w = self.const(self.rng.normal(0, 0.5, (cout, cin // groups, 3, 3)))
        return self.op("Conv", x, w, self.const(self.rng.normal(0, 0.3, cout)), group=groups,
                       pads=[1, 1, 1, 1], **attrs)

    def gemm(self, x: str, fin: int, fout: int) -> str:
        w = self.const(self.rng.normal(0, 0.5, (fout, fin)))
        return self.op("Gemm", x, w, self.const(self.rng.normal(0, 0.3, fout)), transB=1)

    def finish(self, x_shape: tuple[int, ...], outputs: list[str]) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])
        ys = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "signed", [x], ys, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        return model


def every_reader() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """Leaky and PReLU activations read by every reader the rewrite handles."""
    n = Net()
    a = n.op("LeakyRelu", n.conv("x", 2, 4), alpha=0.1, name="leaky_a")
    b = n.op("PRelu", n.conv(a, 4, 4), n.const(n.rng.uniform(-0.3, 1.5, (4, 1, 1))),
             name="prelu_b")
    c = n.op("Add", n.conv(b, 4, 4, groups=4), a)  # depthwise reader; residual Add
    c = n.op("LeakyRelu", c, alpha=-0.3, name="leaky_c")  # a negative slope
    d = n.op("Concat", c, b, axis=1)
    d = n.op("AveragePool", d, kernel_shape=[2, 2], strides=[2, 2])
    e = n.op("LeakyRelu", n.gemm(n.op("Flatten", d), 32, 6), alpha=2.5, name="leaky_e")
    f = n.op("Relu", e)  # an activation reading the pair
    g = n.op("GlobalAveragePool", n.op("LeakyRelu", n.conv(b, 4, 3), alpha=0.0, name="leaky_0"))
    out = n.op("Add", n.gemm(f, 6, 3), n.op("Flatten", g))
    return n.finish((2, 4, 4), [out, e]), (2, 4, 4)  # a leaky output is a graph output


def leaky_on_input() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """The pair's negative half reads the input itself (no synapse to negate)."""
    n = Net(1)
    a = n.op("LeakyRelu", "x", alpha=0.2, name="leaky_in")
    slope = n.const([0.25])  # one slope for all channels
    b = n.op("PRelu", n.gemm(n.op("Flatten", n.conv(a, 3, 2)), 2 * 16, 5), slope)
    return n.finish((3, 4, 4), [n.gemm(b, 5, 4)]), (3, 4, 4)


@pytest.mark.parametrize("build", [every_reader, leaky_on_input])
def test_rewrite_equals_onnxruntime_on_the_original(build: Any) -> None:
    model, shape = build()
    x = np.random.default_rng(2).normal(size=(32, *shape)).astype(np.float32)
    ann = onnx_to_ann(model)
    leaky = [m for m in ann.nodes if m.kind == "leaky_relu"]
    assert leaky
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rewritten = prepare_ann(ann, x, Recipe())
    assert not any(m.kind == "leaky_relu" for m in rewritten.nodes)
    names = {m.name for m in rewritten.nodes if m.kind == "relu"}
    for m in leaky:  # two populations per signed activation (one where α = 0)
        assert f"{m.name}/pos" in names
        assert (f"{m.name}/neg" in names) == bool(np.any(m.alpha))  # type: ignore[attr-defined]
    got = run_ann(rewritten, x)
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    refs = sess.run(None, {"x": x})
    assert list(rewritten.outputs) == list(ann.outputs)
    for o, ref in zip(rewritten.outputs, refs):
        err = np.abs(got[o] - ref).max() / np.abs(ref).max()
        assert err < 1e-5, f"{o}: relative error {err:.2e}"


def test_snn_of_a_signed_net_converges_to_the_ann() -> None:
    """The rate-coding limit holds for the pair: mean SNN output → ANN output as T grows."""
    model, shape = every_reader()
    x = np.random.default_rng(3).uniform(0, 1, size=(64, *shape)).astype(np.float32)
    conv = convert(model, x, Recipe(v0="half"))
    ann = run_ann(conv.ann, x)[conv.ann.outputs[0]]
    pred = simulate(conv.snn, x, 256).predictions[conv.snn.outputs[0]]
    err = [np.abs(pred[t - 1] - ann).mean() / np.abs(ann).mean() for t in (16, 64, 256)]
    assert err[2] < err[0] and err[2] < 0.05, err


# -- refusals ------------------------------------------------------------------------------------
def test_prelu_slope_varying_over_positions_is_refused_by_name() -> None:
    n = Net()
    slope = n.const(n.rng.uniform(0, 0.3, (2, 4, 4)))
    model = n.finish((2, 4, 4), [n.op("PRelu", n.conv("x", 2, 2), slope, name="my_prelu")])
    with pytest.raises(UnsupportedModelError) as info:
        onnx_to_ann(model)
    assert info.value.problems[0][:2] == ("PRelu", "my_prelu")
    assert "varies over spatial positions" in str(info.value)


def test_max_pool_after_leaky_is_refused_under_gate_and_converts_with_avg() -> None:
    n = Net()
    a = n.op("LeakyRelu", n.conv("x", 1, 2), alpha=0.1, name="leaky")
    p = n.op("MaxPool", a, kernel_shape=[2, 2], strides=[2, 2], name="pool")
    model = n.finish((1, 4, 4), [n.gemm(n.op("Flatten", p), 8, 3)])
    x = np.random.default_rng(0).uniform(0, 1, (16, 1, 4, 4)).astype(np.float32)
    with pytest.raises(PassError) as info:
        convert(model, x, Recipe(maxpool="gate"))
    assert "'pool'" in str(info.value) and "'leaky'" in str(info.value)
    assert "--maxpool avg" in str(info.value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(model, x, Recipe(maxpool="avg")).snn
    assert not any(m.kind in ("maxpool", "maxpool_gate", "leaky_relu") for m in snn.nodes)


def test_max_pool_before_leaky_commutes_only_for_nonnegative_slopes() -> None:
    x = np.random.default_rng(0).uniform(0, 1, (16, 1, 4, 4)).astype(np.float32)
    for alpha, ok in ((0.2, True), (-0.2, False)):
        n = Net()
        p = n.op("MaxPool", n.conv("x", 1, 2), kernel_shape=[2, 2], strides=[2, 2], name="pool")
        a = n.op("LeakyRelu", p, alpha=alpha, name="leaky")
        model = n.finish((1, 4, 4), [n.gemm(n.op("Flatten", a), 8, 3)])
        ann = onnx_to_ann(model)
        if ok:  # pooled after the activation: the pool sees the pair, refused only under gate
            with pytest.raises(PassError, match="--maxpool avg"):
                prepare_ann(ann, x, Recipe(maxpool="gate"))
        else:
            with pytest.raises(PassError, match="min-pool") as info:
                prepare_ann(ann, x, Recipe(maxpool="gate"))
            assert "'leaky'" in str(info.value) and "'pool'" in str(info.value)


def test_unsupported_reader_is_refused_naming_both_nodes() -> None:
    n = Net()
    a = n.op("LeakyRelu", n.conv("x", 1, 2), alpha=0.1, name="leaky")
    shifted = n.op("Add", a, n.const(np.ones((2, 1, 1))), name="add_const")
    model = n.finish((1, 4, 4), [n.gemm(n.op("Flatten", shifted), 32, 3)])
    x = np.random.default_rng(0).uniform(0, 1, (16, 1, 4, 4)).astype(np.float32)
    with pytest.raises(PassError) as info:
        convert(model, x, Recipe())
    message = str(info.value)
    assert "add_const" in message and "'leaky'" in message and "Conv, Gemm/MatMul" in message


# -- the bundled models --------------------------------------------------------------------------
BUNDLED = {"digits_cnn_leaky": 0.9963, "digits_resnet_prelu": 0.9981}  # models/MODELS.md


@cache
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibration images, test images, test labels (the digits files)."""
    calib, test = (np.load(MODELS / f"digits_{part}.npz") for part in ("calib", "test"))
    return calib["x"], test["x"], test["y"]


@cache
def converted(name: str) -> Any:
    calib, _, _ = data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(MODELS / f"{name}.onnx", calib, profile_for("numpy").recipe)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_signed_model_within_1pp_at_T32(name: str) -> None:
    """The numpy profile's recipe (channel-wise p99.9, v0 = θ/2), reference simulator."""
    _, x, y = data()
    ann = accuracy(onnxruntime_outputs(MODELS / f"{name}.onnx", x), y)
    assert ann == pytest.approx(BUNDLED[name], abs=1e-4)
    conv = converted(name)
    logits = run_ann(conv.ann, x)[conv.ann.outputs[0]]
    ref = onnxruntime_outputs(MODELS / f"{name}.onnx", x)
    assert np.abs(logits - ref).max() <= 1e-4 * np.abs(ref).max()  # the rewrite is exact
    n_pos = sum(1 for m in conv.snn.nodes if m.name.endswith("/pos"))
    n_neg = sum(1 for m in conv.snn.nodes if m.name.endswith("/neg") and m.kind == "if")
    assert n_pos == n_neg > 0
    (pred,) = simulate(conv.snn, x, 32).predictions.values()
    assert accuracy(pred[-1], y) >= ann - 0.01


@pytest.mark.slow
def test_nir_file_of_a_signed_net_reads_back_and_classifies(tmp_path: Path) -> None:
    """convert --target nir: the file opens with nir.read, both halves of each pair are IF nodes,
    and the network it means (run in the reference simulator) stays within 2 pp at T = 32."""
    import nir

    from onnx2snn.backends.nir import from_nir, write_nir

    calib, x, y = data()
    x, y = x[:270], y[:270]
    recipe = profile_for("nir").recipe
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(MODELS / "digits_cnn_leaky.onnx", calib, recipe).snn
    path = write_nir(snn, tmp_path / "leaky.nir")
    g = nir.read(path)
    n_if = sum(isinstance(m, nir.IF) for m in g.nodes.values())
    assert n_if == sum(1 for m in snn.nodes if m.kind == "if") == 6
    ann = accuracy(onnxruntime_outputs(MODELS / "digits_cnn_leaky.onnx", x), y)
    (pred,) = simulate(from_nir(g), x, 32).predictions.values()
    assert accuracy(pred[-1], y) >= ann - 0.02


@pytest.mark.slow
@pytest.mark.parametrize(("name", "mode"), [("digits_cnn_leaky", "lif"),
                                            ("digits_cnn_leaky", "sdnn"),
                                            ("digits_resnet_prelu", "sdnn")])
def test_loihi_fixed_point_of_signed_models(name: str, mode: str) -> None:
    """Quantized for Loihi 2 (the pairs are ordinary populations; residual and split readers are
    fan-in sums), the bit-exact fixed-point reference stays within 1 pp of the ANN at T = 32.
    (The residual net as ``lif`` needs T = 64: benchmarks/signed_neuron.py --loihi.)"""
    from onnx2snn.backends.numpy.fixed_point import simulate_fixed
    from onnx2snn.quantize import quantize_for_loihi

    calib, x, y = data()
    x, y = x[:200], y[:200]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(MODELS / f"{name}.onnx", calib, profile_for("loihi", mode).recipe).snn
    q = quantize_for_loihi(snn, mode, calib_x=calib)
    steps = 32 + q.graph.meta["loihi"]["latency_steps"]
    (pred,) = simulate_fixed(q.graph, x, steps).predictions.values()
    ann = accuracy(onnxruntime_outputs(MODELS / f"{name}.onnx", x), y)
    assert accuracy(pred[-1], y) >= ann - 0.01
