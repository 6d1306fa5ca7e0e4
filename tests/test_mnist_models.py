"""The bundled MNIST models and data (``models/make_mnist_models.py``) are what MODELS.md says.

Guards the files other tests and the benchmarks rest on: the data split (shapes, dtypes, range,
no calibration image in the test set), the onnxruntime test accuracy documented in MODELS.md,
and that each model converts with the layer structure its description promises.
"""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from onnx2snn.convert import Recipe, convert
from onnx2snn.evaluate import accuracy
from onnx2snn.oracle import onnxruntime_outputs

MODELS = Path(__file__).resolve().parents[1] / "models"
# onnxruntime accuracy on the 1000 test images (models/MODELS.md) and spiking layers (IF
# populations) after conversion
DOCUMENTED = {"mnist_vgg": (0.985, 6), "mnist_resnet": (0.981, 13),
              "mnist_mobilenet": (0.981, 11), "mnist_inception": (0.985, 15)}


@cache
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    test = np.load(MODELS / "mnist_test.npz")
    return np.load(MODELS / "mnist_calib.npz")["x"], test["x"], test["y"]


def test_data_split() -> None:
    calib, x, y = data()
    assert x.shape == (1000, 1, 28, 28) and calib.shape == (256, 1, 28, 28)
    assert x.dtype == calib.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(y, minlength=10).min() >= 70  # shuffled: every class in the test set
    test_rows = {row.tobytes() for row in x}
    assert not any(row.tobytes() in test_rows for row in calib)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_ann_accuracy_and_structure_are_as_documented(name: str) -> None:
    calib, x, y = data()
    path = MODELS / f"{name}.onnx"
    assert accuracy(onnxruntime_outputs(path, x), y) == pytest.approx(DOCUMENTED[name][0],
                                                                       abs=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(path, calib[:32], Recipe()).snn
    assert sum(1 for n in snn.nodes if n.kind == "if") == DOCUMENTED[name][1]


@pytest.mark.slow
def test_a_net_trained_on_normalised_data_keeps_its_accuracy_on_loihi() -> None:
    """The MNIST ResNet as a net trained on (x − 0.1307) / 0.3081 would be (the model behind
    the inverse map, fed normalised data): on the Loihi target its first synapses take the
    map's shift through the padding (a bias per neuron) and its input sends the data below zero
    shifted (``LoihiInput.offset``). It classifies the same images as the original on data in
    [0, 1] (sigma-delta, fixed-point reference, T = 24). Before, the target refused the model,
    and the data's values below zero would have been clipped to 0."""
    import onnx

    from onnx2snn.backends.numpy.fixed_point import simulate_fixed
    from onnx2snn.quantize import quantize_for_loihi
    from onnx2snn.samples import with_input_normalization

    mean, std = 0.1307, 0.3081
    calib = np.load(MODELS / "mnist_calib.npz")["x"][:256]
    x = np.load(MODELS / "mnist_test.npz")["x"][:100]
    original = onnx.load(str(MODELS / "mnist_resnet.onnx"))
    classes = []
    for model, cx, tx in ((original, calib, x),
                          (with_input_normalization(original, -mean / std, 1 / std),
                           (calib - mean) / std, (x - mean) / std)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snn = convert(model, cx, Recipe(maxpool="avg")).snn
        q = quantize_for_loihi(snn, "sdnn", calib_x=cx).graph
        (pred,) = simulate_fixed(q, tx, 24).predictions.values()
        classes.append(pred[-1].reshape(len(tx), -1).argmax(1))
    assert q[q.inputs[0]].offset is not None
    assert (classes[0] == classes[1]).mean() >= 0.97
