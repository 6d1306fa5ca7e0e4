"""The Loihi 2 quantization pass: register ranges, folding, refusals, the fixed-point reference."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from onnx2snn.backends.numpy.fixed_point import simulate_fixed
from onnx2snn.convert import Recipe, convert
from onnx2snn.errors import PassError
from onnx2snn.evaluate import accuracy
from onnx2snn.ir import load_graph, save_graph
from onnx2snn.ir.loihi import LoihiConv, LoihiDense, LoihiNeuron
from onnx2snn.oracle import onnxruntime_outputs
from onnx2snn.quantize import prepare_for_loihi, quantize_for_loihi

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cal = np.load(MODELS / "digits_calib.npz")["x"]
    test = np.load(MODELS / "digits_test.npz")
    return cal, test["x"], test["y"]


def _snn(name: str, cal: np.ndarray, **recipe: object):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(MODELS / f"digits_{name}.onnx", cal, Recipe(**recipe)).snn  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["lif", "if-subtract", "sdnn"])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_registers_fit_loihi(data, model: str, mode: str) -> None:
    cal, _, _ = data
    q = quantize_for_loihi(_snn(model, cal), mode, calib_x=cal)
    for n in q.graph.nodes:
        if isinstance(n, (LoihiDense, LoihiConv)):
            assert np.abs(n.weight_mant).max() <= 127
            assert -8 <= n.weight_exp <= 7
        if isinstance(n, LoihiNeuron):
            assert 0 < n.vth < 2**17 or mode == "sdnn"
            assert np.abs(n.bias_mant).max(initial=0) <= 4095 or mode == "sdnn"
            assert 0 <= n.bias_exp <= 7
    for layer in q.layers:
        assert layer.get("weight_error_pct", 0.0) < 5.0, layer
    assert "layer" in q.table()


def test_avgpool_folds_exactly(data) -> None:
    """Folding pools into the next Conv/Dense changes nothing in float."""
    from onnx2snn.backends.numpy import simulate

    cal, x, _ = data
    snn = _snn("cnn", cal)
    folded = prepare_for_loihi(snn)
    assert not any(n.kind == "avgpool" for n in folded.nodes)
    a = simulate(snn, x[:8], 8, dtype=np.float64).predictions
    b = simulate(folded, x[:8], 8, dtype=np.float64).predictions
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-9)


def test_per_channel_thresholds_fold_into_weights(data) -> None:
    cal, x, y = data
    snn = _snn("mlp", cal, norm="channel-percentile")
    q = quantize_for_loihi(snn, "if-subtract", calib_x=cal)
    pops = [n for n in q.graph.nodes if isinstance(n, LoihiNeuron)]
    assert all(np.ndim(p.vth) == 0 for p in pops)
    p = simulate_fixed(q.graph, x[:200], 32).predictions
    acc = float((next(iter(p.values()))[-1].argmax(1) == y[:200]).mean())
    assert acc > 0.9


@pytest.mark.parametrize("mode,floor", [("sdnn", 0.97), ("if-subtract", 0.95), ("lif", 0.93)])
def test_fixed_point_accuracy_mlp(data, mode: str, floor: float) -> None:
    cal, x, y = data
    q = quantize_for_loihi(_snn("mlp", cal), mode, calib_x=cal)
    p = next(iter(simulate_fixed(q.graph, x, 32).predictions.values()))
    assert float((p[-1].argmax(1) == y).mean()) >= floor


@pytest.mark.slow
def test_residual_net_for_loihi_classifies(data) -> None:
    """The bundled residual net for Loihi (average pooling) keeps the ANN's accuracy in fixed
    point. ``digits_resnet`` was trained with max pooling: with ``--maxpool avg`` its ANN itself
    falls to ~10 %, and so did every Loihi figure of it."""
    cal, x, y = data
    x, y = x[:200], y[:200]
    ann = accuracy(onnxruntime_outputs(MODELS / "digits_resnet_avg.onnx", x), y)
    assert ann >= 0.99
    snn = _snn("resnet_avg", cal)
    assert not any(n.kind in ("maxpool", "maxpool_gate") for n in snn.nodes)
    q = quantize_for_loihi(snn, "sdnn", calib_x=cal)
    latency = q.graph.meta["loihi"]["latency_steps"]
    (p,) = simulate_fixed(q.graph, x, latency + 2).predictions.values()
    assert float((p[-1].argmax(1) == y).mean()) >= ann - 0.01


def test_maxpool_gate_refused_by_name(data) -> None:
    cal, _, _ = data
    with pytest.raises(PassError, match=r"MaxPool.*--maxpool avg"):
        quantize_for_loihi(_snn("resnet", cal), "lif")


def test_quantized_graph_round_trips(tmp_path, data) -> None:
    cal, x, _ = data
    q = quantize_for_loihi(_snn("cnn", cal), "sdnn", calib_x=cal).graph
    save_graph(q, tmp_path / "q.snn")
    back = load_graph(tmp_path / "q.snn")
    a = simulate_fixed(q, x[:4], 12).predictions
    b = simulate_fixed(back, x[:4], 12).predictions
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_state_ranges_checked_on_calibration(data) -> None:
    cal, _, _ = data
    q = quantize_for_loihi(_snn("cnn", cal), "sdnn", calib_x=cal)
    usage = [layer["state_usage"] for layer in q.layers if "state_usage" in layer]
    assert usage and all(0 < u < 1 for u in usage)


def test_a_wrapping_synapse_output_is_refused(data) -> None:
    """A conv output that leaves 24 bits wraps in Lava and in the reference alike (bit-exact, and
    wrong): the range check on calibration data refuses it, naming the layer."""
    from onnx2snn.quantize import LoihiQuantization, check_ranges

    cal, _, _ = data
    q = quantize_for_loihi(_snn("cnn", cal), "sdnn", calib_x=cal)
    first = next(n for n in q.graph.nodes if isinstance(n, LoihiConv))
    check_ranges(q, cal[:8], 8)  # as quantized: in range
    # 8-bit input · 127 · 9 taps · 2**7 > 2**23: the first conv's output wraps
    loud = q.graph.with_nodes([n.replace(weight_exp=7) if n is first else n for n in q.graph.nodes])
    with pytest.raises(PassError, match=f"{first.name!r}.*wrap"):
        check_ranges(LoihiQuantization(loud, q.layers), cal[:8], 8)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_inputs_below_zero_are_sent_shifted_not_clipped(tmp_path, data, model: str) -> None:
    """Normalised data (here the digits minus 0.5) has values below zero, which the unsigned
    input messages cannot carry: the input sends x − offset (offset = the calibration minimum)
    and the first synapses add the offset back. Before, the input clipped them to 0, silently:
    the sigma-delta CNN agreed with the ANN on 52 % of these images at T = 32, the MLP on 81 %."""
    cal, x, _ = data
    cal, x = cal - 0.5, x[:200] - 0.5
    ann = onnxruntime_outputs(MODELS / f"digits_{model}.onnx", x).argmax(1)
    q = quantize_for_loihi(_snn(model, cal), "sdnn", calib_x=cal).graph
    inp = q[q.inputs[0]]
    assert inp.offset is not None and np.allclose(inp.offset, -0.5)
    assert q.meta["loihi"]["input_offset"] == pytest.approx([-0.5] * inp.offset.size)
    assert inp.quantize(np.full((1,) + inp.shape, -0.5)).max() == 0  # the minimum sends 0
    (pred,) = simulate_fixed(q, x, 32).predictions.values()
    assert (pred[-1].reshape(len(x), -1).argmax(1) == ann).mean() >= 0.97
    save_graph(q, tmp_path / "q.snn")  # the offset is kept in the file
    np.testing.assert_array_equal(load_graph(tmp_path / "q.snn")[q.inputs[0]].offset, inp.offset)
    # an input maximum given for x: what is sent reaches it minus the offset
    given = quantize_for_loihi(_snn(model, cal), "sdnn", calib_x=cal, input_max=1.0).graph
    assert given[given.inputs[0]].scale == pytest.approx(255 / 1.5)
    # data in [0, 1] keeps the unshifted input
    q0 = quantize_for_loihi(_snn(model, data[0]), "sdnn", calib_x=data[0]).graph
    assert q0[q0.inputs[0]].offset is None


@pytest.mark.slow
def test_lava_sends_the_shifted_input(data, lava_equals_reference) -> None:
    cal, x, _ = data
    q = quantize_for_loihi(_snn("cnn", cal - 0.5), "lif", calib_x=cal - 0.5).graph
    assert q[q.inputs[0]].offset is not None
    lava_equals_reference(q, x[:2] - 0.5, 16)
