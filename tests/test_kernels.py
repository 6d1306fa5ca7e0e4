"""Synapse kernels: NumPy pointwise convolutions, and onnxruntime's execution providers.

The pointwise (1×1) NumPy kernel of ``kernels="auto"`` must agree with onnxruntime to float
rounding and give each sample the same bits whatever the batch (the streaming tests rely on
it); the providers asked for (or the default list, a GPU's first) must reach the sessions. No GPU
here: the CUDA case is checked with onnxruntime's provider list and session class replaced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnx2snn.backends.numpy import kernels as K
from onnx2snn.backends.numpy import simulate
from onnx2snn.cli.main import main
from onnx2snn.convert import Recipe, convert
from onnx2snn.errors import BackendError
from onnx2snn.ir.nodes import Conv

MODELS = Path(__file__).resolve().parents[1] / "models"
X = np.load(MODELS / "digits_test.npz")["x"][:16]
CALIB = np.load(MODELS / "digits_calib.npz")["x"][:64]


@pytest.fixture(scope="module")
def resnet():
    """The digits ResNet: 3×3 convolutions and a strided 1×1 shortcut."""
    return convert(MODELS / "digits_resnet.onnx", CALIB, Recipe()).snn


def pointwise(graph) -> list[Conv]:
    return [n for n in graph.nodes if isinstance(n, Conv) and n.weight.shape[2:] == (1, 1)]


def test_pointwise_kernel_agrees_with_onnxruntime_and_ignores_the_batch(resnet) -> None:
    nodes = pointwise(resnet)
    assert nodes, "the digits ResNet has no 1x1 convolution any more"
    rng = np.random.default_rng(0)
    for node in nodes:
        (shape,) = resnet.input_shapes(node)
        x = ((rng.random((40,) + tuple(shape)) < 0.2) * 0.75).astype(np.float32)
        fast = K.pointwise_kernel(node, np.float32)
        assert fast is not None
        y = fast(x)
        ref = K.ort_kernel(node, tuple(shape), np.float32)(x)
        assert y.shape == ref.shape and y.dtype == np.float32
        np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
        for n in (1, 7):  # the first samples alone: the same bits
            np.testing.assert_array_equal(fast(x[:n]), y[:n])


def test_pointwise_kernel_only_for_plain_1x1(resnet) -> None:
    for node in resnet.nodes:
        if isinstance(node, Conv) and node not in pointwise(resnet):
            assert K.pointwise_kernel(node, np.float32) is None


def test_auto_runs_1x1_in_numpy_and_onnxruntime_runs_all(resnet) -> None:
    auto = K.synapse_kernels(resnet, np.float32, "auto")
    every = K.synapse_kernels(resnet, np.float32, "onnxruntime")
    names = {n.name for n in pointwise(resnet)}
    assert auto.keys() == every.keys()
    for name, op in auto.items():
        assert hasattr(op, "session") == (name not in names), name
    assert all(hasattr(op, "session") for op in every.values())
    a = simulate(resnet, X, 12, kernels="auto").predictions
    b = simulate(resnet, X, 12, kernels="onnxruntime").predictions
    for k in a:  # rounding may flip a spike: compare the decisions
        assert (a[k][-1].argmax(-1) == b[k][-1].argmax(-1)).mean() >= 0.9


def test_providers_given_reach_the_sessions(resnet) -> None:
    ops = K.synapse_kernels(resnet, np.float32, "onnxruntime:CPUExecutionProvider")
    assert ops and all(op.session.get_providers() == ["CPUExecutionProvider"]
                       for op in ops.values())
    a = simulate(resnet, X, 6, kernels="onnxruntime:CPUExecutionProvider")
    b = simulate(resnet, X, 6, kernels="onnxruntime")
    for k in a.predictions:
        np.testing.assert_array_equal(a.predictions[k], b.predictions[k])


def test_default_puts_cuda_first_when_onnxruntime_has_it(resnet, monkeypatch) -> None:
    asked: list[list[str]] = []
    real = ort.InferenceSession

    def session(model, options, providers):  # records what it was asked, runs on the CPU
        asked.append(list(providers))
        return real(model, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    assert K.default_providers() == ("CUDAExecutionProvider", "CPUExecutionProvider")
    ops = K.synapse_kernels(resnet, np.float32, "auto")
    synapses = [n for n in resnet.nodes if type(n).__name__ in ("Dense", "Conv", "AvgPool")]
    assert len(asked) == len(synapses) == len(ops)  # with a GPU, 1x1 convs stay there too
    assert all(p == ["CUDAExecutionProvider", "CPUExecutionProvider"] for p in asked)


@pytest.mark.parametrize(("text", "message"), [
    ("cuda", "unknown kernels"),
    ("numpy:CPUExecutionProvider", "numpy takes no execution providers"),
    ("onnxruntime:NopeExecutionProvider", "no NopeExecutionProvider.*it has.*CPUExecution"),
    ("auto:", None),
])
def test_parse_kernels(text: str, message: str | None) -> None:
    if message is None:
        assert K.parse_kernels(text) == ("auto", None)
        return
    with pytest.raises(BackendError, match=message):
        K.parse_kernels(text)


def test_cli_refuses_an_unknown_provider(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path), "--data", str(MODELS /
                                  "digits_test.npz"), "--kernels", "onnxruntime:Nope"])
    assert r.exit_code == 2 and "no Nope" in r.output and "--kernels" in r.output


@pytest.mark.parametrize("kernel,strides,pads,include", [
    ((2, 2), (2, 2), (0, 0, 0, 0), False), ((3, 3), (1, 1), (1, 1, 1, 1), False),
    ((3, 3), (2, 2), (1, 0, 1, 1), True), ((7, 7), (1, 1), (0, 0, 0, 0), False)])
def test_average_pool_in_onnxruntime_agrees_with_numpy(kernel, strides, pads, include) -> None:
    """Average pools run in onnxruntime under auto and onnxruntime, within float rounding of
    NumPy's kernel, and give each sample the same bits whatever the batch."""
    from onnx2snn.ir.graph import Graph
    from onnx2snn.ir.nodes import AvgPool, Input

    pool = AvgPool(name="p", inputs=("x",), kernel=kernel, strides=strides, pads=pads,
                   count_include_pad=include, shape=(5, 1, 1))
    pool = pool.replace(shape=pool.infer_shape([(5, 7, 7)]))
    graph = Graph([Input(name="x", inputs=(), shape=(5, 7, 7)), pool], ("p",))
    x = np.random.default_rng(1).normal(size=(9, 5, 7, 7)).astype(np.float32)
    for mode in ("auto", "onnxruntime"):
        ops = K.synapse_kernels(graph, np.float32, mode)
        assert hasattr(ops["p"], "session"), mode
        y = ops["p"](x)
        np.testing.assert_allclose(y, graph["p"].forward(x), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(ops["p"](x[:2]), y[:2])
    assert K.synapse_kernels(graph, np.float32, "numpy") == {}
    q = pool.replace(ceil_mode=True, name="q")
    ceil = Graph([graph["x"], q.replace(shape=q.infer_shape([(5, 7, 7)]))], ("q",))
    assert "q" not in K.synapse_kernels(ceil, np.float32, "auto")  # ceil mode stays in NumPy


def _first_leader(x: np.ndarray, node, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Window maxima and the flat index of the first input (row-major) at each, by search."""
    n, c, h, w = x.shape
    y = np.empty((n, c) + out_hw, x.dtype)
    idx = np.empty((n, c) + out_hw, np.int64)
    for b, ch, i, j in np.ndindex(n, c, *out_hw):
        best = None
        for u, v in np.ndindex(*node.kernel):
            r = i * node.strides[0] + u * node.dilations[0] - node.pads[0]
            q = j * node.strides[1] + v * node.dilations[1] - node.pads[1]
            if 0 <= r < h and 0 <= q < w and (best is None or x[b, ch, r, q] > x[b, ch, best[0], best[1]]):
                best = (r, q)
        assert best is not None
        y[b, ch, i, j] = x[b, ch, best[0], best[1]]
        idx[b, ch, i, j] = ((b * c + ch) * h + best[0]) * w + best[1]
    return y, idx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_argmax_pool_kernel_leader_is_the_first_maximum_in_row_major_order(dtype) -> None:
    """The max-pool gate's leader: onnxruntime's MaxPool indices name the first input of the
    window, in row-major order, that equals its maximum, with padding, strides, dilations and
    ceil mode, on inputs with many ties."""
    from onnx2snn.ir.spiking import MaxPoolGate

    rng = np.random.default_rng(0)
    for _ in range(60):
        k = tuple(int(v) for v in rng.integers(1, 4, 2))
        pads = tuple(int(rng.integers(0, kk)) for kk in (k[0], k[1], k[0], k[1]))
        node = MaxPoolGate(name="g", inputs=("x",), shape=(1, 1, 1), kernel=k,
                           strides=tuple(int(v) for v in rng.integers(1, 4, 2)), pads=pads,
                           dilations=tuple(int(v) for v in rng.integers(1, 3, 2)),
                           ceil_mode=bool(rng.integers(0, 2)))
        in_shape = (2, int(rng.integers(5, 10)), int(rng.integers(5, 10)))
        node = node.replace(shape=node.infer_shape([in_shape]))
        x = rng.integers(0, 3, (3,) + in_shape).astype(dtype)  # values 0, 1, 2: ties everywhere
        y, leader = K.argmax_pool_kernel(node, in_shape, dtype)(x)
        want_y, want_leader = _first_leader(x, node, node.shape[1:])
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(leader, want_leader)


@pytest.mark.parametrize("channels,out,size,kernel,stride,pad,groups", [
    (16, 32, 4, 3, 1, 1, 1), (1, 8, 8, 3, 1, 1, 1), (8, 16, 1, 1, 1, 0, 1),
    (32, 64, 7, 3, 2, 1, 1), (16, 16, 6, 3, 1, 1, 4)])
def test_numpy_conv_gives_each_sample_the_same_bits_whatever_the_batch(
        channels, out, size, kernel, stride, pad, groups) -> None:
    """NumPy's im2col convolution (float64 calibration, ``--kernels numpy``) makes one GEMM of
    the same shape per sample: with one GEMM over all rows, OpenBLAS on an AVX-512 CPU rounded
    the rows of a 1- or 2-sample batch otherwise than the same rows in a batch of 300, and
    calibration's statistics changed with the memory budget."""
    from onnx2snn import numerics

    rng = np.random.default_rng(0)
    x = rng.random((40, channels, size, size))
    w = rng.standard_normal((out, channels // groups, kernel, kernel))
    geometry = ((stride, stride), (pad,) * 4, (1, 1), groups)
    whole = numerics.conv2d(x, w, None, *geometry)
    for b in (1, 2, 3, 17):
        np.testing.assert_array_equal(numerics.conv2d(x[:b], w, None, *geometry), whole[:b])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_in_onnxruntime_equals_numpy(dtype) -> None:
    """The ANN's MaxPool (calibration) runs in onnxruntime with NumPy's maxima, bit for bit,
    in ceil mode too (its last window never starts in the right padding, as in ours)."""
    from onnx2snn.ir.graph import Graph
    from onnx2snn.ir.nodes import Input, MaxPool

    rng = np.random.default_rng(2)
    for _ in range(40):
        k = tuple(int(v) for v in rng.integers(1, 4, 2))
        pool = MaxPool(name="p", inputs=("x",), shape=(1, 1, 1), kernel=k,
                       strides=tuple(int(v) for v in rng.integers(1, 4, 2)),
                       pads=tuple(int(rng.integers(0, kk)) for kk in (k[0], k[1], k[0], k[1])),
                       dilations=tuple(int(v) for v in rng.integers(1, 3, 2)),
                       ceil_mode=bool(rng.integers(0, 2)))
        in_shape = (3, int(rng.integers(4, 11)), int(rng.integers(4, 11)))
        pool = pool.replace(shape=pool.infer_shape([in_shape]))
        graph = Graph([Input(name="x", inputs=(), shape=in_shape), pool], ("p",))
        x = rng.normal(size=(5,) + in_shape).astype(dtype)
        ops = K.synapse_kernels(graph, dtype, "auto")
        assert hasattr(ops["p"], "session")
        np.testing.assert_array_equal(ops["p"](x), pool.forward(x))
