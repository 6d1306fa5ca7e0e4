"""``--maxpool avg``: gain-corrected average pooling substituted in the ANN before calibration.

The graphs here are built from IR nodes, small enough to check every folding rule against the
unfolded form; the bundled ``digits_resnet`` (trained with max pooling) is the end-to-end case,
with onnxruntime on an edited copy of the ONNX file as the reference for the substituted ANN.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnx2snn.ann_executor import run_ann
from onnx2snn.backends.numpy import simulate
from onnx2snn.convert import Recipe, convert
from onnx2snn.convert.maxpool_avg import pool_gains, substitute_average_pooling
from onnx2snn.convert.to_snn import commute_maxpool_relu
from onnx2snn.errors import PassError
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.ir import AvgPool, Graph, MaxPool
from onnx2snn.ir.nodes import Add, Affine, Conv, Dense, Input, Node, Relu, Reshape

MODELS = Path(__file__).resolve().parents[1] / "models"
RNG = np.random.default_rng(7)


def _conv(name: str, src: str, c_in: int, c_out: int, hw: int, groups: int = 1) -> Conv:
    w = RNG.normal(0, 0.5, size=(c_out, c_in // groups, 3, 3))
    return Conv(name=name, inputs=(src,), shape=(c_out, hw, hw), weight=w,
                bias=RNG.uniform(0.1, 0.3, size=c_out), pads=(1, 1, 1, 1), groups=groups)


def _pool(src: str, c: int, hw: int, **kw) -> MaxPool:
    return MaxPool(name="pool", inputs=(src,), shape=(c, hw // 2, hw // 2), kernel=(2, 2),
                   strides=(2, 2), **kw)


def _head(nodes: list[Node], src: str, shape: tuple[int, ...]) -> Graph:
    n = int(np.prod(shape))
    nodes += [Reshape(name="flat", inputs=(src,), shape=(n,)),
              Dense(name="fc", inputs=("flat",), shape=(3,), weight=RNG.normal(0, 0.3, (3, n)))]
    return Graph(tuple(nodes), ("fc",))


def pool_net(branches: list[Node], summands: tuple[str, ...]) -> Graph:
    """conv c1 - ReLU r1 - max pool, then ``branches``, the ``summands`` added, ReLU, head."""
    nodes: list[Node] = [Input(name="x", inputs=(), shape=(2, 8, 8)), _conv("c1", "x", 2, 4, 8),
                         Relu(name="r1", inputs=("c1",), shape=(4, 8, 8)), _pool("r1", 4, 8),
                         *branches, Add(name="sum", inputs=summands, shape=(4, 4, 4)),
                         Relu(name="r2", inputs=("sum",), shape=(4, 4, 4))]
    return _head(nodes, "r2", (4, 4, 4))


def conv_consumers_net() -> Graph:
    """The pool feeds a plain and a depthwise conv: the gain goes into their inputs."""
    return pool_net([_conv("c2", "pool", 4, 4, 4), _conv("dw", "pool", 4, 4, 4, groups=4)],
                    ("c2", "dw"))


def relu_producer_net() -> Graph:
    """The pool feeds a conv and an identity residual Add: the gain goes into c1's outputs."""
    return pool_net([_conv("c2", "pool", 4, 4, 4)], ("c2", "pool"))


def unfoldable_net() -> Graph:
    """The pool's ReLU also feeds a conv, the pool feeds an Add: the gain stays an Affine."""
    side = Conv(name="side", inputs=("r1",), shape=(4, 4, 4), strides=(2, 2),
                weight=RNG.normal(0, 0.5, (4, 4, 2, 2)))
    return pool_net([side], ("side", "pool"))


def with_explicit_gain(ann: Graph, gain: np.ndarray) -> Graph:
    """``ann`` with its MaxPool ``pool`` as AvgPool followed by an Affine(gain): the reference."""
    m = ann["pool"]
    assert isinstance(m, MaxPool)
    pool = AvgPool(name="pool", inputs=m.inputs, shape=m.shape, kernel=m.kernel,
                   strides=m.strides)
    scale = Affine(name="g", inputs=("pool",), shape=m.shape, scale=gain.reshape(-1, 1, 1))
    nodes: list[Node] = []
    for n in ann.nodes:
        if n.name == "pool":
            nodes += [pool, scale]
        else:
            nodes.append(n.replace(inputs=tuple("g" if i == "pool" else i for i in n.inputs)))
    return Graph(tuple(nodes), ann.outputs)


def substitute(ann: Graph, x: np.ndarray) -> Graph:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return substitute_average_pooling(ann, x)


@pytest.mark.parametrize("make, folded_into", [
    (conv_consumers_net, {"c2", "dw"}), (relu_producer_net, {"c1"}), (unfoldable_net, set()),
])
def test_gain_folding_computes_the_unfolded_substitute(make, folded_into: set[str]) -> None:
    ann = make()
    x = RNG.uniform(0, 1, size=(32, 2, 8, 8))
    gain = pool_gains(ann, x)["pool"]
    assert gain.shape == (4,) and np.all(gain > 1.0)  # the max of a window exceeds its mean
    sub = substitute(ann, x)
    assert isinstance(sub["pool"], AvgPool) and not any(isinstance(n, MaxPool) for n in sub)
    changed = {n.name for n in sub if n.name in ann and hasattr(n, "weight")
               and not np.array_equal(n.weight, ann[n.name].weight)}  # type: ignore[attr-defined]
    assert changed == folded_into
    assert any(isinstance(n, Affine) for n in sub) == (not folded_into)
    ref = with_explicit_gain(ann, gain)
    np.testing.assert_allclose(run_ann(sub, x)["fc"], run_ann(ref, x)["fc"], rtol=1e-10,
                               atol=1e-10)


def test_gain_matches_the_max_pool_mean_per_channel() -> None:
    ann = unfoldable_net()
    x = RNG.uniform(0, 1, size=(16, 2, 8, 8))
    sub = substitute(ann, x)
    a = run_ann(ann, x, keep=["pool"])["pool"].mean(axis=(0, 2, 3))
    b = run_ann(sub, x, keep=["pool/gain"])["pool/gain"].mean(axis=(0, 2, 3))
    np.testing.assert_allclose(b, a, rtol=1e-12)


def test_dilated_max_pool_is_refused_by_name() -> None:
    nodes: list[Node] = [Input(name="x", inputs=(), shape=(2, 8, 8)), _conv("c1", "x", 2, 4, 8),
                         Relu(name="r1", inputs=("c1",), shape=(4, 8, 8)),
                         _pool("r1", 4, 8, dilations=(2, 2)).replace(shape=(4, 3, 3))]
    ann = _head(nodes, "pool", (4, 3, 3))
    with pytest.raises(PassError, match="'pool'.*--maxpool gate"):
        substitute(ann, RNG.uniform(0, 1, size=(4, 2, 8, 8)))


def _onnx_with_gain_corrected_avg(path: Path, gains: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The ONNX file with each MaxPool replaced by AveragePool then Mul by its gain."""
    model = onnx.load(str(path))
    nodes = []
    for node in model.graph.node:
        if node.op_type != "MaxPool":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute
                 if a.name in ("kernel_shape", "strides", "pads", "ceil_mode")}
        out = node.output[0]
        nodes.append(helper.make_node("AveragePool", list(node.input), [out + "_avg"], **attrs))
        model.graph.initializer.append(numpy_helper.from_array(
            gains[node.name].reshape(1, -1, 1, 1).astype(np.float32), out + "_gain"))
        nodes.append(helper.make_node("Mul", [out + "_avg", out + "_gain"], [out]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


@pytest.mark.slow
def test_digits_resnet_keeps_its_accuracy_with_maxpool_avg(ort_run) -> None:
    """``digits_resnet`` (trained with max pooling): the plain swap scores 10.6 % in onnxruntime;
    the gain-corrected substitute and its SNN stay near the ANN's 99.6 %."""
    calib = np.load(MODELS / "digits_calib.npz")["x"]
    test = np.load(MODELS / "digits_test.npz")
    x, y = test["x"][:300], test["y"][:300]
    path = MODELS / "digits_resnet.onnx"
    ann = commute_maxpool_relu(onnx_to_ann(str(path)))
    gains = pool_gains(ann, calib)
    # the substitute the converter calibrates equals onnxruntime running the edited ONNX file
    (ort_logits,) = ort_run(_onnx_with_gain_corrected_avg(path, gains), {"input": x})
    with pytest.warns(UserWarning, match=r"/2/MaxPool.*average pooling.*gain.*\d+\.\d % "):
        conv = convert(str(path), calib, Recipe(maxpool="avg"))
    np.testing.assert_allclose(run_ann(conv.ann, x)[conv.ann.outputs[0]], ort_logits,
                               rtol=1e-4, atol=1e-4)
    assert float((ort_logits.argmax(1) == y).mean()) >= 0.98
    assert not any(n.kind in ("affine", "maxpool", "maxpool_gate") for n in conv.snn.nodes)
    assert any("gain" in a for a in conv.snn.meta["approximations"])
    (pred,) = simulate(conv.snn, x, 64).predictions.values()
    assert float((pred[-1].argmax(1) == y).mean()) >= 0.97
