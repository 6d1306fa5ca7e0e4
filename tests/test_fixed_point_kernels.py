"""The float32 kernels of the fixed-point Loihi synapses give exactly the bits of NumPy float64.

``kernels.fixed_point_kernel`` runs ``LoihiDense`` / ``LoihiConv`` products in float32 where
``exact_in_float32`` proves them exact, else falls back to their float64 ``forward``. On the
bundled digits models, in every Loihi neuron mode, ``simulate_fixed`` with the default kernels
must equal ``kernels="numpy"`` (every recorded node and the predictions, ``np.array_equal``),
and the float32 path must really have run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from onnx2snn.backends.numpy import kernels as K
from onnx2snn.backends.numpy.fixed_point import simulate_fixed
from onnx2snn.convert import Recipe, convert
from onnx2snn.ir.loihi import LoihiConv, LoihiDense, LoihiInput
from onnx2snn.ir.nodes import Input
from onnx2snn.quantize import quantize_for_loihi
from onnx2snn.targets.loihi2 import wrap24

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return (np.load(MODELS / "digits_calib.npz")["x"],
            np.load(MODELS / "digits_test.npz")["x"][:24])


@pytest.mark.parametrize("mode", ["lif", "if-subtract", "sdnn"])
@pytest.mark.parametrize("model", ["mlp", "cnn", "dwsep"])
def test_float32_path_equals_float64_bits(data, model: str, mode: str, monkeypatch) -> None:
    cal, x = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(MODELS / f"digits_{model}.onnx", cal, Recipe()).snn
    q = quantize_for_loihi(snn, mode, calib_x=cal).graph
    synapses = [n for n in q.nodes if isinstance(n, (LoihiDense, LoihiConv))]
    assert set(K.synapse_kernels(q, np.float64)) == {n.name for n in synapses}
    verdicts: list[bool] = []
    exact = K.exact_in_float32

    def counted(x: np.ndarray, l1: int) -> bool:
        verdicts.append(exact(x, l1))
        return verdicts[-1]

    monkeypatch.setattr(K, "exact_in_float32", counted)
    every = [n.name for n in q.nodes if n.name not in q.outputs]
    fast = simulate_fixed(q, x, 12, record=every, batch_size=10)
    assert any(verdicts), "the float32 path never ran: the test would prove nothing"
    slow = simulate_fixed(q, x, 12, record=every, batch_size=10, kernels="numpy")
    for k in every:
        assert np.array_equal(fast.recorded[k], slow.recorded[k]), k
    for k in slow.predictions:
        assert np.array_equal(fast.predictions[k], slow.predictions[k]), k


def test_exact_in_float32_bound() -> None:
    x = np.array([[0.0, -4.0, 2.0]])
    assert K.exact_in_float32(x, 2**22 - 1)  # 4 · (2**22 − 1) < 2**24
    assert not K.exact_in_float32(x, 2**22)  # 2**24: no longer below the bound
    assert K.exact_in_float32(np.zeros((0, 3)), 10**9)  # an empty batch has nothing to sum


def test_falls_back_to_float64_where_the_bound_fails() -> None:
    """Wide graded messages into a dense layer: float32 would lose the low bits of the sums."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (16, 64))
    node = LoihiDense(name="d", inputs=("x",), shape=(16,), weight_mant=w, weight_exp=-3)
    kernel = K.fixed_point_kernel(node, (64,))
    assert kernel is not None
    wide = rng.integers(-2**20, 2**20, (8, 64)).astype(np.float64)
    assert not K.exact_in_float32(wide, node.fan_in_l1())
    lossy = (wide.astype(np.float32) @ w.T.astype(np.float32)).astype(np.float64)
    assert not np.array_equal(lossy, wide @ w.T), "float32 would have been exact anyway"
    assert np.array_equal(kernel(wide), node.forward(wide))
    narrow = rng.integers(-255, 256, (8, 64)).astype(np.float64)
    assert K.exact_in_float32(narrow, node.fan_in_l1())
    assert np.array_equal(kernel(narrow), node.forward(narrow))


def test_conv_kernel_keeps_exponent_and_wrap() -> None:
    """A LoihiConv whose sums wrap at 24 bits after the exponent: same bits both ways."""
    rng = np.random.default_rng(1)
    w = rng.integers(-127, 128, (4, 3, 3, 3))
    node = LoihiConv(name="c", inputs=("x",), shape=(4, 6, 6), weight_mant=w, weight_exp=7,
                     pads=(1, 1))
    x = rng.integers(0, 256, (5, 3, 6, 6)).astype(np.float64)
    assert K.exact_in_float32(x, node.fan_in_l1())
    kernel = K.fixed_point_kernel(node, (3, 6, 6))
    assert kernel is not None
    ref = node.forward(x)
    unwrapped = node.product.forward(x) * 2**7
    assert np.abs(unwrapped).max() >= 2**23  # some outputs wrap
    assert np.array_equal(ref, wrap24(unwrapped))
    assert np.array_equal(kernel(x), ref)
    small = x[:, :, :2]  # a narrower map: every output stays below 2**23, the wrap is skipped
    small_node = node.replace(shape=(4, 2, 6), weight_exp=0)
    assert np.abs(small_node.product.forward(small)).max() < 2**23
    assert np.array_equal(small_node.forward(small), wrap24(small_node.product.forward(small)))


def test_only_graphs_fed_by_loihi_inputs_get_float32_kernels(data) -> None:
    """A plain Input may carry fractions, for which the float32 bound proves nothing."""
    cal, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(MODELS / "digits_mlp.onnx", cal, Recipe()).snn
    q = quantize_for_loihi(snn, "lif", calib_x=cal).graph
    assert K.synapse_kernels(q, np.float64)
    plain = q.with_nodes(Input(name=n.name, inputs=(), shape=n.shape)
                         if isinstance(n, LoihiInput) else n for n in q.nodes)
    assert K.synapse_kernels(plain, np.float64) == {}
