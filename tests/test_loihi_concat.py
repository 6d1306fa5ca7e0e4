"""Concat on Loihi: each synapse layer that reads a Concat is split into one synapse per input.

The model is a small Inception/SqueezeNet-like net with random weights: two conv branches and the
raw input concatenated (a Concat of a Concat), read by two convs (the "expand" layers); their
Concat average-pooled and flattened into a dense layer; a Concat of vectors into the readout.
Every concatenated input reaches the consumer's neurons through its own synapse process with its
own exponent, quantized with the unit of its own source (8-bit input, spikes of different λ).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2snn.backends.numpy import simulate
from onnx2snn.backends.numpy.fixed_point import simulate_fixed
from onnx2snn.convert import Recipe, convert
from onnx2snn.errors import PassError
from onnx2snn.ir.graph import Graph
from onnx2snn.quantize import prepare_for_loihi, quantize_for_loihi

MODELS = Path(__file__).resolve().parents[1] / "models"


class _Onnx:
    """Builds a model on the digits input x (N, 1, 8, 8) with seeded random weights."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def op(self, kind: str, ins: list[str], **attrs: object) -> str:
        out = f"{kind.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(kind, ins, [out], name=out, **attrs))
        return out

    def w(self, *shape: int, gain: float = 1.0) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        a = self.rng.normal(size=shape) * gain * np.sqrt(2.0 / fan_in)
        self.inits.append(numpy_helper.from_array(a.astype(np.float32), f"w{len(self.inits)}"))
        return self.inits[-1].name

    def conv_relu(self, x: str, cin: int, cout: int, k: int, gain: float = 1.0,
                  group: int = 1) -> str:
        w = self.w(cout, cin // group, k, k, gain=gain)
        return self.op("Relu", [self.op("Conv", [x, w, self.w(cout, gain=0.05)],
                                        pads=[k // 2] * 4, group=group)])

    def gemm(self, x: str, cin: int, cout: int) -> str:
        return self.op("Gemm", [x, self.w(cout, cin), self.w(cout, gain=0.05)], transB=1)

    def model(self, out: str, shape: tuple[int, ...]) -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes, "concat",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", *shape])], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        return m


def fire_net() -> onnx.ModelProto:
    b = _Onnx(seed=0)
    a = b.conv_relu("x", 1, 4, 1)
    c = b.conv_relu("x", 1, 4, 3, gain=4.0)  # a branch with a several times larger scale
    cat1 = b.op("Concat", [b.op("Concat", [a, c], axis=1), "x"], axis=1)  # 9 channels
    e1 = b.conv_relu(cat1, 9, 6, 3)
    e2 = b.conv_relu(cat1, 9, 4, 1)
    cat2 = b.op("Concat", [e1, e2], axis=1)
    pooled = b.op("AveragePool", [cat2], kernel_shape=[2, 2], strides=[2, 2])
    h = b.op("Relu", [b.gemm(b.op("Flatten", [pooled]), 160, 16)])
    g = b.op("Flatten", [b.op("GlobalAveragePool", [e2])])
    return b.model(b.gemm(b.op("Concat", [h, g], axis=1), 20, 10), (10,))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return (np.load(MODELS / "digits_calib.npz")["x"],
            np.load(MODELS / "digits_test.npz")["x"][:100])


@pytest.fixture(scope="module")
def snn(data) -> Graph:
    return convert(fire_net(), data[0], Recipe()).snn


def _ann(x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(fire_net().SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x.astype(np.float32)})[0]


def test_split_changes_nothing_in_float(snn, data) -> None:
    prepared = prepare_for_loihi(snn)
    kinds = [n.kind for n in prepared.nodes]
    assert "concat" in [n.kind for n in snn.nodes]
    assert "concat" not in kinds and "avgpool" not in kinds
    # 3 parts (two branches and the input) for each expand conv, 2 for each dense
    assert sum(n.kind in ("conv", "dense") and "/part" in n.name
               for n in prepared.nodes) == 3 + 3 + 2 + 2
    x = data[1][:16]
    a = simulate(snn, x, 16, dtype=np.float64).predictions
    b = simulate(prepared, x, 16, dtype=np.float64).predictions
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", ["sdnn", "lif", "if-subtract"])
def test_every_part_keeps_its_precision(snn, data, mode: str) -> None:
    """The input's part (units of 1/255) sums into the same neurons as spikes worth λ: the shared
    gain must leave it mantissa bits (it used to round to zero in the spiking modes)."""
    q = quantize_for_loihi(snn, mode, calib_x=data[0])
    parts = [r for r in q.layers if "/part" in r["name"]]
    assert {r["source"] for r in parts} >= {"x"}
    for r in parts:
        assert r["mantissa_bits"] >= 4 and r["weight_error_pct"] < 15.0, r
    assert len({r["weight_exp"] for r in parts if r["target"] == parts[0]["target"]}) > 1


def test_sdnn_fixed_point_matches_the_ann(snn, data) -> None:
    cal, x = data
    q = quantize_for_loihi(snn, "sdnn", calib_x=cal).graph
    (pred,) = simulate_fixed(q, x, 8).predictions.values()
    ann = _ann(x)
    assert np.abs(pred[-1] - ann).max() < 0.05 * np.abs(ann).max()
    assert (pred[-1].argmax(1) == ann.argmax(1)).mean() >= 0.97


def test_if_subtract_fixed_point_follows_the_float_snn(snn, data) -> None:
    """Quantization adds little to the rate-coding error of the float SNN (same schedule)."""
    cal, x = data
    q = quantize_for_loihi(snn, "if-subtract", calib_x=cal).graph
    ann = _ann(x)
    scale = np.abs(ann).max()
    (fixed,) = simulate_fixed(q, x, 64).predictions.values()
    (flt,) = simulate(snn, x, 64, schedule="loihi", dtype=np.float64).predictions.values()
    e_fixed = np.abs(fixed[-1] - ann).max() / scale
    e_float = np.abs(flt[-1] - ann).max() / scale
    assert e_fixed <= 1.25 * e_float + 0.02, (e_fixed, e_float)
    assert (fixed[-1].argmax(1) == ann.argmax(1)).mean() >= 0.95


def _refused(model: onnx.ModelProto, cal: np.ndarray) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(model, cal[:32], Recipe()).snn
    with pytest.raises(PassError) as e:
        prepare_for_loihi(snn)
    return str(e.value)


def test_concat_read_by_a_population_is_refused(data) -> None:
    b = _Onnx()
    cat = b.op("Concat", [b.op("Conv", ["x", b.w(2, 1, 1, 1)]), b.op("Conv", ["x", b.w(2, 1, 1, 1)])],
               axis=1)
    h = b.op("Relu", [cat])
    msg = _refused(b.model(b.gemm(b.op("Flatten", [h]), 256, 3), (3,)), data[0])
    assert "concat node 'concat2'" in msg and "read by if node 'relu3'" in msg


def test_grouped_conv_of_a_concat_is_refused(data) -> None:
    b = _Onnx()
    cat = b.op("Concat", [b.conv_relu("x", 1, 2, 1), b.conv_relu("x", 1, 2, 3)], axis=1)
    h = b.conv_relu(cat, 4, 4, 1, group=2)
    msg = _refused(b.model(b.gemm(b.op("Flatten", [h]), 256, 3), (3,)), data[0])
    assert "conv node 'conv5'" in msg and "grouped convolution" in msg


def test_concat_as_the_output_is_refused(data) -> None:
    b = _Onnx()
    v = b.op("Flatten", [b.conv_relu("x", 1, 1, 1)])
    msg = _refused(b.model(b.op("Concat", [b.gemm(v, 64, 2), b.gemm(v, 64, 3)], axis=1), (5,)),
                   data[0])
    assert "read by readout node" in msg


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sdnn", "lif", "if-subtract"])
def test_lava_fixed_pt_equals_reference(snn, data, mode: str, lava_equals_reference) -> None:
    """Every population's messages and the readout's currents, at every step, bit for bit."""
    cal, x = data
    q = quantize_for_loihi(snn, mode, calib_x=cal).graph
    (out,) = q.outputs
    assert q[q[out].inputs[0]].kind == "add"  # the readout sums two synapse processes (a split Concat)
    lava_equals_reference(q, x[:2], 16)
