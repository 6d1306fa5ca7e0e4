"""Composition of linear layers (onnx2snn.compose): each rule equals running the two layers.

Every case runs E(P(x)) with the layers' own forward (float64) on random inputs and checks the
composed layer gives the same values; the pairs no single convolution expresses are refused with
both names. The whole-graph pass is checked on the bundled MNIST ResNet and MobileNetV2, whose
pool-into-residual-sum and linear bottlenecks (projection → Add → expansion, no neurons between)
have no Loihi form without it, and a small net with both shapes runs in Lava bit for bit like the
fixed-point reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnx2snn.backends.numpy import simulate
from onnx2snn.compose import as_conv, compose, conv_adjoint
from onnx2snn.convert import Recipe, convert
from onnx2snn.errors import PassError
from onnx2snn.ir.loihi import LoihiConv, LoihiNeuron
from onnx2snn.ir.nodes import Affine, AvgPool, Conv, Dense
from onnx2snn.ir.spiking import IF
from onnx2snn.quantize import prepare_for_loihi, quantize_for_loihi
from onnx2snn.samples import with_input_normalization

MODELS = Path(__file__).resolve().parents[1] / "models"
RNG = np.random.default_rng(0)


def _conv(name: str, src: str, cin: int, cout: int, k: int, in_hw: tuple[int, int], *,
          stride: int = 1, pad: int = 0, groups: int = 1, dilation: int = 1,
          bias: bool = True) -> Conv:
    c = Conv(name=name, inputs=(src,), shape=(cout, 1, 1),
             weight=RNG.normal(size=(cout, cin // groups, k, k)),
             bias=RNG.normal(size=cout) if bias else None, strides=(stride, stride),
             pads=(pad,) * 4, dilations=(dilation, dilation), groups=groups)
    return c.replace(shape=c.infer_shape([(cin,) + in_hw]))


def _same(layer: Conv | Dense, p: Conv | Dense, e: Conv | Dense, in_shape: tuple[int, ...]) -> None:
    """``layer`` computes e(p(x)) (a Dense reads its input flattened)."""
    x = RNG.normal(size=(3,) + in_shape)
    mid = p.forward(x)
    want = e.forward(mid.reshape(3, -1) if isinstance(e, Dense) else mid)
    got = layer.forward(x.reshape(3, -1) if isinstance(layer, Dense) else x)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_conv_adjoint_is_the_transpose() -> None:
    for kw in ({"stride": 2, "pad": 1}, {"groups": 3, "pad": 2, "dilation": 2},
               {"stride": 3, "pad": 0}):
        p = _conv("p", "x", 6, 9, 3, (7, 8), bias=False, **kw)  # type: ignore[arg-type]
        n_in = 6 * 7 * 8
        m = p.forward(np.eye(n_in).reshape(n_in, 6, 7, 8)).reshape(n_in, -1).T
        y = RNG.normal(size=(4,) + tuple(p.shape))
        got = conv_adjoint(p, y, (6, 7, 8)).reshape(4, -1)
        np.testing.assert_allclose(got, y.reshape(4, -1) @ m, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["1x1 after 3x3", "3x3 after 1x1", "after a patch conv",
                                  "depthwise after depthwise", "1x1 after depthwise"])
def test_conv_after_conv(case: str) -> None:
    hw = (8, 8)
    if case == "1x1 after 3x3":
        p = _conv("p", "x", 4, 6, 3, hw, stride=2, pad=1)
        e = _conv("e", "p", 6, 5, 1, p.shape[1:])
    elif case == "3x3 after 1x1":
        p = _conv("p", "x", 4, 6, 1, hw)
        e = _conv("e", "p", 6, 5, 3, p.shape[1:], bias=True)  # no padding: uniform bias
    elif case == "after a patch conv":
        p = _conv("p", "x", 4, 6, 2, hw, stride=2)
        e = _conv("e", "p", 6, 5, 3, p.shape[1:], pad=1, stride=2).replace(bias=None)
        p = p.replace(bias=None)
    elif case == "depthwise after depthwise":
        p = _conv("p", "x", 4, 4, 1, hw, groups=4, bias=False)
        e = _conv("e", "p", 4, 4, 3, hw, groups=4, pad=1, bias=False)
    else:
        p = _conv("p", "x", 4, 4, 3, hw, groups=4, pad=1)
        e = _conv("e", "p", 4, 7, 1, hw)
    c = compose(e, p, (4,) + hw)
    assert c.name == "e" and c.inputs == ("x",) and c.shape == e.shape
    if case == "depthwise after depthwise":
        assert isinstance(c, Conv) and c.groups == 4  # stays depthwise
    _same(c, p, e, (4,) + hw)


def test_dense_after_flattened_conv_and_dense() -> None:
    p = _conv("p", "x", 3, 5, 3, (6, 6), stride=2, pad=1)
    e = Dense(name="e", inputs=("flat",), shape=(4,), weight=RNG.normal(size=(4, 45)),
              bias=RNG.normal(size=4))
    c = compose(e, p, (3, 6, 6))
    assert isinstance(c, Dense) and c.weight.shape == (4, 108)
    _same(c, p, e, (3, 6, 6))
    d1 = Dense(name="d1", inputs=("v",), shape=(7,), weight=RNG.normal(size=(7, 5)),
               bias=RNG.normal(size=7))
    d2 = Dense(name="d2", inputs=("d1",), shape=(3,), weight=RNG.normal(size=(3, 7)), bias=None)
    _same(compose(d2, d1, (5,)), d1, d2, (5,))


def test_pairs_no_convolution_expresses_are_refused() -> None:
    p = _conv("first", "x", 4, 4, 3, (8, 8), pad=1)
    e = _conv("second", "first", 4, 4, 3, (8, 8), pad=1)
    with pytest.raises(PassError, match="'second'.*'first'"):
        compose(e, p, (4, 8, 8))
    # a padded E over a map with a bias: the edges get another bias, one per output position
    p1 = _conv("proj", "x", 4, 6, 1, (8, 8))
    e3 = _conv("exp", "proj", 6, 5, 3, (8, 8), pad=1)
    composed = compose(e3, p1, (4, 8, 8))
    assert composed.bias is not None and composed.bias.shape == (5, 8, 8)
    _same(composed, p1, e3, (4, 8, 8))
    flat = compose(e3, p1.replace(bias=None), (4, 8, 8))  # without P's bias: one per channel
    assert flat.bias is not None and flat.bias.shape == (5,)
    # and a Dense behind a flatten reads that map through its bias per position
    d = Dense(name="d", inputs=("exp",), shape=(3,), weight=RNG.normal(size=(3, 5 * 64)),
              bias=RNG.normal(size=3))
    _same(compose(d, composed, (4, 8, 8)), composed, d, (4, 8, 8))


def test_pools_and_affine_maps_as_convolutions() -> None:
    x = RNG.normal(size=(2, 3, 8, 8))
    pool = AvgPool(name="pool", inputs=("x",), shape=(3, 4, 4), kernel=(2, 2), strides=(2, 2))
    np.testing.assert_allclose(as_conv(pool, (3, 8, 8)).forward(x), pool.forward(x), rtol=1e-12)
    counted = AvgPool(name="c", inputs=("x",), shape=(3, 8, 8), kernel=(3, 3), pads=(1, 1, 1, 1),
                      count_include_pad=True)
    np.testing.assert_allclose(as_conv(counted, (3, 8, 8)).forward(x), counted.forward(x),
                               rtol=1e-12)
    with pytest.raises(PassError, match="edge windows"):
        as_conv(counted.replace(count_include_pad=False), (3, 8, 8))
    gain = Affine(name="gain", inputs=("x",), shape=(3, 8, 8), scale=RNG.normal(size=(3, 1, 1)),
                  shift=RNG.normal(size=(3, 1, 1)))
    np.testing.assert_allclose(as_conv(gain, (3, 8, 8)).forward(x), gain.forward(x), rtol=1e-12)
    with pytest.raises(PassError, match="varies within a channel"):
        as_conv(gain.replace(scale=RNG.normal(size=(3, 8, 8))), (3, 8, 8))


@pytest.mark.parametrize("model", ["mnist_resnet", "mnist_mobilenet"])
def test_deep_nets_take_the_loihi_shape_without_changing_values(model: str) -> None:
    """After prepare_for_loihi every synapse reads a population or the input, and the float
    network computes what it computed before (float64, 16 steps)."""
    data = np.load(MODELS / "mnist_test.npz")["x"][:12]
    calib = np.load(MODELS / "mnist_calib.npz")["x"][:64]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(str(MODELS / f"{model}.onnx"), calib, Recipe(maxpool="avg")).snn
    prepared = prepare_for_loihi(snn)
    assert {"avgpool", "affine"}.isdisjoint(n.kind for n in prepared.nodes)
    for n in prepared.nodes:
        if isinstance(n, (Conv, Dense)):
            src = prepared[n.inputs[0]]
            while src.kind == "reshape":
                src = prepared[src.inputs[0]]
            assert isinstance(src, IF) or src.kind == "input", (n.name, src.name)
    a = simulate(snn, data, 16, dtype=np.float64).predictions
    b = simulate(prepared, data, 16, dtype=np.float64).predictions
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-9, atol=1e-9)


def _bottleneck_net(digits_onnx: Callable[..., onnx.ModelProto]) -> onnx.ModelProto:
    """A digits net (1×8×8) with the two shapes Loihi needed composition for: an average pool
    feeding a residual sum (and the block), and a linear bottleneck (projection → Add →
    expansion, no ReLU between); then a depthwise layer of 128 channels, which Lava's Conv
    computes as zeros unless the builder merges its groups (``regroup_for_lava``)."""
    rng = np.random.default_rng(3)
    inits: list[onnx.TensorProto] = []

    def w(*shape: int) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        a = rng.normal(size=shape) * np.sqrt(2.0 / fan_in) if len(shape) > 1 \
            else rng.normal(size=shape) * 0.05
        inits.append(numpy_helper.from_array(a.astype(np.float32), f"w{len(inits)}"))
        return inits[-1].name

    def conv(x: str, out: str, cin: int, cout: int, k: int, groups: int = 1) -> onnx.NodeProto:
        return helper.make_node("Conv", [x, w(cout, cin // groups, k, k), w(cout)], [out],
                                pads=[k // 2] * 4, group=groups, name=out)

    nodes = [
        conv("x", "c0", 1, 6, 3), helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("AveragePool", ["r0"], ["p0"], kernel_shape=[2, 2], strides=[2, 2]),
        conv("p0", "c1", 6, 6, 3), helper.make_node("Relu", ["c1"], ["r1"]),
        conv("r1", "c2", 6, 6, 3), helper.make_node("Add", ["c2", "p0"], ["a1"]),  # pool skip
        helper.make_node("Relu", ["a1"], ["r2"]),
        conv("r2", "proj1", 6, 4, 1),                                      # linear projection
        conv("proj1", "e1", 4, 8, 1), helper.make_node("Relu", ["e1"], ["r3"]),
        conv("r3", "proj2", 8, 4, 1), helper.make_node("Add", ["proj1", "proj2"], ["a2"]),
        conv("a2", "e2", 4, 128, 1), helper.make_node("Relu", ["e2"], ["r4"]),  # expansion
        conv("r4", "dw", 128, 128, 3, groups=128), helper.make_node("Relu", ["dw"], ["r5"]),
        helper.make_node("Flatten", ["r5"], ["f"]),
        helper.make_node("Gemm", ["f", w(10, 2048), w(10)], ["y"], transB=1),
    ]
    return digits_onnx(nodes, inits, "bottleneck")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sdnn", "lif", "if-subtract"])
def test_lava_runs_composed_synapses_bit_exactly(mode: str, lava_equals_reference,
                                                 digits_onnx) -> None:
    """The composed network in Lava fixed_pt equals the fixed-point reference: every
    population's messages and the readout's currents, at every step."""
    calib = np.load(MODELS / "digits_calib.npz")["x"]
    x = np.load(MODELS / "digits_test.npz")["x"][:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(_bottleneck_net(digits_onnx), calib, Recipe()).snn
    q = quantize_for_loihi(snn, mode, calib_x=calib).graph
    assert any(n.name.startswith("e2/term") for n in q.nodes)  # the expansion was distributed
    assert any(isinstance(n, LoihiConv) and n.groups == 6 and tuple(n.strides) == (2, 2)
               for n in q.nodes)  # the pool into the residual sum, a depthwise synapse
    assert any(isinstance(n, LoihiConv) and n.groups == 128 for n in q.nodes)
    lava_equals_reference(q, x, 16)


def test_lava_groups_are_merged_without_changing_the_convolution() -> None:
    """lava-nc keeps a Conv's groups in an int8: the builder merges groups to at most 127, with
    block-diagonal weights computing the same convolution."""
    pytest.importorskip("lava")
    from onnx2snn.backends.loihi.network import regroup_for_lava
    from onnx2snn.targets.loihi2 import LAVA_CONV_GROUPS_MAX

    for channels, per_group_out in ((128, 1), (256, 2), (131, 1)):
        conv = _conv("dw", "x", channels, channels * per_group_out, 3, (5, 5), groups=channels,
                     pad=1, bias=False)
        w, groups = regroup_for_lava(conv.weight, conv.groups)
        assert groups <= LAVA_CONV_GROUPS_MAX
        x = RNG.normal(size=(2, channels, 5, 5))
        np.testing.assert_allclose(conv.replace(weight=w, groups=groups).forward(x),
                                   conv.forward(x), rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sdnn", "lif", "if-subtract"])
def test_lava_runs_a_normalised_input_into_a_padded_conv(mode: str, lava_equals_reference) -> None:
    """The normalisation's shift reaches the first population as a bias per neuron (the edge
    neurons see fewer shifted inputs through the zero padding); Lava runs it like the
    reference. Before, the Loihi target refused such a net."""
    calib = np.load(MODELS / "digits_calib.npz")["x"]
    x = np.load(MODELS / "digits_test.npz")["x"][:2]
    model = with_input_normalization(onnx.load(str(MODELS / "digits_cnn.onnx")), 0.3, 0.25)
    snn = convert(model, calib, Recipe()).snn
    q = quantize_for_loihi(snn, mode, calib_x=calib).graph
    first = next(n for n in q.nodes if isinstance(n, LoihiNeuron))
    bias = np.broadcast_to(first.bias_mant, first.shape)
    assert bias.ndim == 3 and not np.array_equal(bias, np.broadcast_to(bias[:, :1, :1], bias.shape))
    lava_equals_reference(q, x, 16)
