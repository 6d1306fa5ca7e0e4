"""Lava runs of quantized graphs agree spike for spike with the fixed-point reference simulator.

For the bundled MLP, CNN and residual net (``digits_resnet_avg``, trained with average pooling
for Loihi) and the LeakyReLU CNN (``digits_cnn_leaky``: pairs of populations, split synapses),
in every neuron mode, a few images and 16 steps: every population's messages in a
Lava ``fixed_pt`` run equal the reference's at every step, and so do the currents into the
readout. ``floating_pt`` runs agree on predictions within float tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnx2snn.backends.numpy.fixed_point import simulate_fixed
from onnx2snn.convert import Recipe, convert
from onnx2snn.ir.loihi import LoihiNeuron
from onnx2snn.quantize import quantize_for_loihi

pytest.importorskip("lava")
from onnx2snn.backends.loihi.network import LavaNetwork  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models"
T = 16
N_IMAGES = 2


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return (np.load(MODELS / "digits_calib.npz")["x"],
            np.load(MODELS / "digits_test.npz")["x"][:N_IMAGES])


def _quantized(model: str, mode: str, cal: np.ndarray):
    snn = convert(MODELS / f"digits_{model}.onnx", cal, Recipe()).snn
    return quantize_for_loihi(snn, mode, calib_x=cal).graph


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lif", "if-subtract", "sdnn"])
@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet_avg", "cnn_leaky"])
def test_lava_fixed_pt_equals_reference(data, model: str, mode: str) -> None:
    cal, x = data
    q = _quantized(model, mode, cal)
    pops = [n.name for n in q.nodes if isinstance(n, LoihiNeuron)]
    feeds = [q[o].inputs[0] for o in q.outputs]
    ref = simulate_fixed(q, x, T, record=pops + feeds)
    with LavaNetwork(q, T, "fixed_pt") as net:
        got = net.run(x)
    for p in pops:
        # the reference records what the synapses receive (one step later); Lava's sink the send
        np.testing.assert_array_equal(got[p][:-1], ref.recorded[p][1:], err_msg=p)
        assert ref.recorded[p].any(), f"{p} never sends: the test would prove nothing"
    for o, f in zip(q.outputs, feeds):
        np.testing.assert_array_equal(got[o], ref.recorded[f], err_msg=o)
        pred = q[o].predict(got[o])  # type: ignore[attr-defined]
        np.testing.assert_array_equal(pred, ref.predictions[o])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lif", "sdnn"])
def test_lava_floating_pt_agrees(data, mode: str) -> None:
    cal, x = data
    q = _quantized("mlp", mode, cal)
    ref = simulate_fixed(q, x, T)
    with LavaNetwork(q, T, "floating_pt") as net:
        got = net.run(x)
    for o in q.outputs:
        pred = q[o].predict(got[o])  # type: ignore[attr-defined]
        scale = np.abs(ref.predictions[o]).max()
        assert np.abs(pred - ref.predictions[o]).max() <= 0.02 * scale
        np.testing.assert_array_equal(pred[-1].argmax(-1), ref.predictions[o][-1].argmax(-1))
