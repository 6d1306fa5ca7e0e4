"""Conversion ANN -> SNN: scales λ, recipes, residual/concat nets, max-pool policies, bias
correction, and the SNN graph file.

Models are written with ``onnx.helper`` (``Net`` below); the ANN reference is onnxruntime.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2snn.ann_executor import run_ann
from onnx2snn.backends.numpy import simulate
from onnx2snn.convert import Recipe, RecipeError, convert, convert_ann
from onnx2snn.convert.to_snn import commute_maxpool_relu
from onnx2snn.errors import PassError
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.ir import IF, AvgPool, Graph, MaxPool, MaxPoolGate, Readout, load_graph, save_graph


class Net:
    """A tiny ONNX model writer: ``op`` appends a node and returns its output name."""

    def __init__(self, in_shape: tuple[int, ...], seed: int = 0) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.in_shape = tuple(in_shape)
        self.rng = np.random.default_rng(seed)
        self.k = 0

    def const(self, a) -> str:
        self.k += 1
        self.inits.append(numpy_helper.from_array(np.asarray(a, np.float32), f"c{self.k}"))
        return f"c{self.k}"

    def op(self, op: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        self.k += 1
        out = name or f"{op.lower()}{self.k}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def gemm(self, x: str, w, b=None) -> str:
        w = np.asarray(w)
        return self.op("Gemm", [x, self.const(w), self.const(np.zeros(w.shape[0]) if b is None
                                                              else b)], transB=1)

    def conv(self, x: str, w, b=None, **attrs) -> str:
        ins = [x, self.const(w)] + ([] if b is None else [self.const(b)])
        return self.op("Conv", ins, **attrs)

    def rand_conv(self, x: str, cin: int, cout: int, k: int = 3, gain: float = 1.0) -> str:
        w = self.rng.normal(size=(cout, cin, k, k)) * gain * np.sqrt(2 / (cin * k * k))
        return self.conv(x, w, self.rng.normal(size=cout) * 0.1, pads=[k // 2] * 4)

    def model(self, out: str, out_shape: tuple[int, ...]) -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes, "test",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *self.in_shape])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", *out_shape])],
            self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        return m


def head(net: Net, x: str, c: int, classes: int = 3) -> str:
    """GlobalAveragePool -> Flatten -> Gemm(c -> classes)."""
    f = net.op("Flatten", [net.op("GlobalAveragePool", [x])])
    return net.gemm(f, net.rng.normal(size=(classes, c)))


def normalized_errors(model: onnx.ModelProto, snn: Graph, x: np.ndarray, ts: list[int],
                      ort_run) -> list[float]:
    """max |readout(T) − ANN| / max |ANN| for each T (one simulation to max T)."""
    (ann,) = ort_run(model, {"x": x.astype(np.float32)})
    (pred,) = simulate(snn, x, max(ts), dtype=np.float64).predictions.values()
    scale = float(np.abs(ann).max())
    return [float(np.abs(pred[t - 1] - ann).max()) / scale for t in ts]


def ifs(snn: Graph) -> list[IF]:
    return [n for n in snn.nodes if isinstance(n, IF)]


# -- the scale λ -------------------------------------------------------------------------------
def mlp_with_clip(ceiling: float) -> onnx.ModelProto:
    net = Net((3,))
    h = net.gemm("x", net.rng.normal(size=(5, 3)))
    c = net.op("Clip", [h, net.const(0.0), net.const(ceiling)], name="clip")
    return net.model(net.gemm(c, net.rng.normal(size=(2, 5))), (2,))


def test_clip_ceiling_is_the_scale() -> None:
    x = np.random.default_rng(0).uniform(0, 4, size=(64, 3))
    model = mlp_with_clip(0.75)
    conv = convert(model, x, Recipe(norm="max"))
    (pop,) = ifs(conv.snn)
    assert pop.name == "clip"
    assert np.all(pop.threshold == 0.75) and np.all(pop.out_scale == 0.75)
    assert conv.snn.meta["calibration"]["clip"]["lambda_source"] == "ceiling"
    # without --ceiling: λ is the calibration maximum, which the clip bounds by 0.75 here
    no = convert(model, x * 0.01, Recipe(norm="max", use_ceiling=False))
    (pop,) = ifs(no.snn)
    assert 0 < float(pop.threshold) < 0.75
    assert float(pop.threshold) == pytest.approx(no.stats["clip"].maximum)
    assert no.snn.meta["calibration"]["clip"]["lambda_source"] == "max"


@pytest.mark.parametrize("norm", ["max", "percentile", "channel-percentile"])
def test_clip_ceiling_bounds_the_scale_but_is_not_it(norm: str) -> None:
    # activations far below the ceiling (a ReLU6 layer whose values stay near 1): λ is the
    # statistic, not the ceiling; the ceiling only caps it
    x = np.random.default_rng(0).uniform(0, 4, size=(256, 3)) * 0.01
    conv = convert(mlp_with_clip(6.0), x, Recipe(norm=norm))
    (pop,) = ifs(conv.snn)
    st = conv.stats["clip"]
    assert 0 < float(np.max(pop.threshold)) <= st.maximum < 6.0 * 0.1
    assert "ceiling 6" in st.source and st.source != "ceiling"
    # activations that reach the ceiling: λ is the ceiling
    hot = convert(mlp_with_clip(0.75), x * 100, Recipe(norm=norm))
    assert np.all(ifs(hot.snn)[0].threshold == 0.75)


def one_feature_relu() -> onnx.ModelProto:
    """x (1,) -> Relu(1·x) -> Gemm: the ReLU's activations are the positive calibration values."""
    net = Net((1,))
    r = net.op("Relu", [net.gemm("x", [[1.0]])], name="relu")
    return net.model(net.gemm(r, [[1.0], [-1.0]]), (2,))


def known_values() -> np.ndarray:
    """1..1001, their negatives and zeros, shuffled: the positives have p99.9 = 1000, p50 = 501."""
    v = np.concatenate([np.arange(1, 1002), -np.arange(1, 1002), np.zeros(500)])
    return np.random.default_rng(0).permutation(v)[:, None]


@pytest.mark.parametrize("recipe, expected", [
    (Recipe(norm="max"), 1001.0),
    (Recipe(norm="percentile", percentile=99.9), 1000.0),
    (Recipe(norm="percentile", percentile=50), 501.0),  # zeros and negatives are not counted
    (Recipe(norm="percentile", percentile=100), 1001.0),
])
def test_layer_scale_from_known_activations(recipe: Recipe, expected: float) -> None:
    conv = convert(one_feature_relu(), known_values(), recipe)
    (pop,) = ifs(conv.snn)
    assert float(pop.threshold) == pytest.approx(expected)
    assert conv.stats["relu"].maximum == 1001.0


def two_channel_relu() -> onnx.ModelProto:
    """x (2, 1, 1) -> identity 1x1 Conv -> Relu -> head."""
    net = Net((2, 1, 1))
    r = net.op("Relu", [net.conv("x", np.eye(2).reshape(2, 2, 1, 1))], name="relu")
    return net.model(head(net, r, 2), (3,))


def test_channel_percentile_gives_one_scale_per_channel() -> None:
    v = known_values()[:, 0]
    x = np.stack([v, v / 1000], axis=1).reshape(-1, 2, 1, 1)
    model = two_channel_relu()
    (pop,) = ifs(convert(model, x, Recipe(norm="channel-percentile")).snn)
    assert pop.threshold.shape == (2, 1, 1)
    assert pop.threshold.ravel() == pytest.approx([1000.0, 1.0])
    assert np.array_equal(pop.out_scale, pop.threshold)
    # the layer-wide choices give one λ for both channels
    (pop,) = ifs(convert(model, x, Recipe(norm="max")).snn)
    assert pop.threshold.size == 1 and float(pop.threshold) == 1001.0


def test_silent_layers_and_channels_get_a_positive_scale() -> None:
    # channel 1 never fires: it borrows the largest λ of the layer; a silent layer gets 1
    x = np.stack([np.linspace(0, 2, 50), -np.ones(50)], axis=1).reshape(-1, 2, 1, 1)
    (pop,) = ifs(convert(two_channel_relu(), x, Recipe(norm="channel-percentile",
                                                       percentile=100)).snn)
    assert pop.threshold.ravel() == pytest.approx([2.0, 2.0])
    (pop,) = ifs(convert(two_channel_relu(), -np.abs(x), Recipe(norm="max")).snn)
    assert float(pop.threshold) == 1.0


def test_populations_follow_the_recipe() -> None:
    x = np.random.default_rng(0).uniform(0, 1, size=(32, 3))
    model = mlp_with_clip(0.75)
    (pop,) = ifs(convert(model, x, Recipe(v0="half", reset="zero")).snn)
    assert np.all(pop.v0 == 0.375) and pop.reset == "zero"
    snn = convert(model, x, Recipe()).snn
    (pop,) = ifs(snn)
    assert np.all(pop.v0 == 0) and pop.reset == "subtract" and pop.bias is None
    # every graph output gets a readout; the recipe and the scales are in the metadata
    (out,) = snn.outputs
    assert isinstance(snn[out], Readout)
    assert snn.meta["recipe"] == Recipe().to_dict() and snn.meta["stage"] == "snn"
    assert snn.meta["calibration"]["clip"]["lambda"] == [0.75]


# -- recipe validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, word", [
    ({"norm": "l2"}, "norm"), ({"reset": "leak"}, "reset"), ({"v0": "random"}, "v0"),
    ({"maxpool": "max"}, "maxpool"), ({"percentile": 0.0}, "percentile"),
    ({"percentile": 100.5}, "percentile"), ({"correction_steps": 0}, "correction_steps"),
])
def test_recipe_refuses_unknown_values(kwargs: dict, word: str) -> None:
    with pytest.raises(RecipeError, match=word):
        Recipe(**kwargs)


def test_recipe_round_trips_through_dict() -> None:
    r = Recipe(norm="max", v0="half", bias_correction=True, correction_steps=8)
    assert Recipe.from_dict(r.to_dict()) == r
    assert Recipe.from_dict({**r.to_dict(), "from_a_newer_version": 1}) == r
    assert RecipeError.exit_code == 2


# -- residual Add and Concat ---------------------------------------------------------------------
def residual_net() -> onnx.ModelProto:
    """Conv-Relu -> [Conv-Relu-Conv] + skip -> Relu -> AvgPool -> head (a residual block)."""
    net = Net((2, 6, 6), seed=1)
    a = net.op("Relu", [net.rand_conv("x", 2, 4)])
    b = net.op("Relu", [net.rand_conv(a, 4, 4)])
    s = net.op("Add", [net.rand_conv(b, 4, 4), a])
    r = net.op("Relu", [s])
    p = net.op("AveragePool", [r], kernel_shape=[2, 2], strides=[2, 2])
    return net.model(head(net, p, 4), (3,))


def concat_net() -> onnx.ModelProto:
    """Two branches with scales several times apart, concatenated, then Conv-Relu -> head."""
    net = Net((2, 6, 6), seed=2)
    a = net.op("Relu", [net.rand_conv("x", 2, 3)])
    b = net.op("Relu", [net.rand_conv("x", 2, 2, k=1, gain=20.0)])
    c = net.op("Concat", [a, b], axis=1)
    r = net.op("Relu", [net.rand_conv(c, 5, 4)])
    return net.model(head(net, r, 4), (3,))


@pytest.mark.parametrize("make", [residual_net, concat_net])
def test_residual_and_concat_nets_converge_to_the_ann(make, ort_run) -> None:
    model = make()
    x = np.random.default_rng(0).uniform(0, 1, size=(16, 2, 6, 6))
    snn = convert(model, x, Recipe(norm="max")).snn
    lams = [float(np.max(p.threshold)) for p in ifs(snn)]
    if make is concat_net:  # the two concatenated populations keep their own scales
        assert max(lams[:2]) > 3 * min(lams[:2])
    e16, e64, e512 = normalized_errors(model, snn, x, [16, 64, 512], ort_run)
    assert e64 <= e16 / 2 and e512 <= e16 / 8
    assert e512 < 0.01


# -- max pooling ---------------------------------------------------------------------------------
def maxpool_net(relu_first: bool) -> onnx.ModelProto:
    """Conv -> [Relu -> MaxPool | MaxPool -> Relu] -> Conv-Relu -> head."""
    net = Net((2, 6, 6), seed=3)
    c = net.rand_conv("x", 2, 4)
    if relu_first:
        p = net.op("MaxPool", [net.op("Relu", [c], name="relu")], name="pool", kernel_shape=[2, 2],
                   strides=[2, 2])
    else:
        p = net.op("Relu", [net.op("MaxPool", [c], name="pool", kernel_shape=[2, 2],
                                   strides=[2, 2])], name="relu")
    r = net.op("Relu", [net.rand_conv(p, 4, 4)])
    return net.model(head(net, r, 4), (3,))


def test_maxpool_relu_is_commuted() -> None:
    ann = onnx_to_ann(maxpool_net(relu_first=False))
    kinds = [n.kind for n in ann.nodes]
    assert kinds.index("maxpool") < kinds.index("relu")
    swapped = commute_maxpool_relu(ann)
    kinds = [n.kind for n in swapped.nodes]
    assert kinds.index("relu") < kinds.index("maxpool")
    assert swapped["pool"].inputs == ("relu",)
    x = np.random.default_rng(0).normal(size=(8, 2, 6, 6))
    a, b = run_ann(ann, x), run_ann(swapped, x)
    (out,) = ann.outputs
    assert np.allclose(a[out], b[out], atol=1e-12)
    # a pool that already reads a ReLU is left alone
    ann2 = onnx_to_ann(maxpool_net(relu_first=True))
    assert [n.name for n in commute_maxpool_relu(ann2)] == [n.name for n in ann2]


def test_maxpool_gate_policy_converges(ort_run) -> None:
    model = maxpool_net(relu_first=False)
    x = np.random.default_rng(0).uniform(0, 1, size=(16, 2, 6, 6))
    snn = convert(model, x, Recipe(norm="max", maxpool="gate")).snn
    gate = snn["pool"]
    assert isinstance(gate, MaxPoolGate) and isinstance(snn[gate.inputs[0]], IF)
    e16, e512 = normalized_errors(model, snn, x, [16, 512], ort_run)
    assert e512 <= e16 / 4 and e512 < 0.02


def test_maxpool_avg_policy_warns_and_replaces() -> None:
    x = np.random.default_rng(0).uniform(0, 1, size=(8, 2, 6, 6))
    with pytest.warns(UserWarning, match="pool.*average pooling"):
        snn = convert(maxpool_net(True), x, Recipe(maxpool="avg")).snn
    assert isinstance(snn["pool"], AvgPool) and not isinstance(snn["pool"], MaxPool)
    assert any("average pooling" in a for a in snn.meta["approximations"])


def test_maxpool_error_policy_names_the_node() -> None:
    x = np.random.default_rng(0).uniform(0, 1, size=(8, 2, 6, 6))
    with pytest.raises(PassError, match="'pool'.*--maxpool"):
        convert(maxpool_net(True), x, Recipe(maxpool="error"))


# -- bias correction -----------------------------------------------------------------------------
def test_bias_correction_reduces_the_mean_activation_error() -> None:
    net = Net((2, 6, 6), seed=4)
    a = net.op("Relu", [net.rand_conv("x", 2, 4)])
    b = net.op("Relu", [net.rand_conv(a, 4, 4)])
    model = net.model(head(net, b, 4), (3,))
    x = np.random.default_rng(0).uniform(0, 1, size=(32, 2, 6, 6))
    steps = 8
    plain = convert(model, x, Recipe(correction_steps=steps))
    fixed = convert(model, x, Recipe(bias_correction=True, correction_steps=steps))
    pops = [p.name for p in ifs(plain.snn)]
    assert all(fixed.snn[p].bias is not None for p in pops)
    assert all("bias_correction_mean_abs" in fixed.snn.meta["calibration"][p] for p in pops)
    acts = run_ann(plain.ann, x, keep=pops)

    def channel_error(snn: Graph) -> float:
        rec = simulate(snn, x, steps, record=pops, dtype=np.float64).recorded
        errs = []
        for p in pops:
            target = np.minimum(acts[p], np.broadcast_to(snn[p].out_scale, snn[p].shape))
            late = rec[p][steps // 2:]  # the steady state, which the correction fits
            errs.append(np.abs(target.mean(axis=(0, 2, 3)) - late.mean(axis=(0, 1, 3, 4))))
        return float(np.concatenate(errs).mean())

    before, after = channel_error(plain.snn), channel_error(fixed.snn)
    assert after < before / 2, (before, after)


def branching_net() -> onnx.ModelProto:
    """Regions with several sources: a max pool after a ReLU (read by two regions), residual
    Adds, a Concat, and a population fed by the network input and a population at once."""
    net = Net((2, 6, 6), seed=5)
    a = net.op("Relu", [net.rand_conv("x", 2, 4)])
    p = net.op("MaxPool", [a], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    b = net.op("Relu", [net.op("Add", [net.rand_conv(p, 4, 4), net.rand_conv("x", 2, 4)])])
    c = net.op("Relu", [net.op("Add", [net.rand_conv(b, 4, 4), p])])  # the gate read twice
    d = net.op("Relu", [net.rand_conv(net.op("Concat", [b, c], axis=1), 8, 4)])
    return net.model(head(net, d, 4), (3,))


def corrected_by_prefix(snn: Graph, ann: Graph, x: np.ndarray, steps: int, fix,
                        rounds: int = 1) -> Graph:
    """The corrections' definition, the slow way: each population corrected from simulations
    of the whole (already corrected) network up to it. ``fix(pop, target, rec)`` -> new pop."""
    pops = ifs(snn)
    acts = run_ann(ann, x, keep=[p.name for p in pops])
    for pop in pops:
        before = list(snn.nodes[:[n.name for n in snn.nodes].index(pop.name)])
        target = np.minimum(acts[pop.name], np.broadcast_to(pop.out_scale, pop.shape))
        new = pop
        for _ in range(rounds):
            rec = simulate(snn.with_nodes(before + [new], [pop.name]), x, steps,
                           record=[pop.name]).recorded[pop.name]
            new = fix(new, target, rec)
        snn = snn.with_nodes([new if n.name == pop.name else n for n in snn.nodes])
    return snn


@pytest.mark.parametrize("mode", ["bias", "v0", "gain"])
def test_corrections_simulate_each_region_alone_with_the_prefix_bits(mode: str) -> None:
    """The corrections simulate one population's region at a time, fed the recorded outputs of
    the sources before it: the result has the bits of simulating every prefix."""
    from onnx2snn.convert import bias_correction as bc

    x = np.random.default_rng(0).uniform(0, 1, size=(24, 2, 6, 6))
    recipe = Recipe(norm="max", reset="zero") if mode == "gain" else Recipe(v0="half")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conv = convert(branching_net(), x, recipe)
    steps = 6
    fast = {"bias": bc.correct_biases, "v0": bc.calibrate_v0,
            "gain": bc.calibrate_gains}[mode](conv.snn, conv.ann, x, steps)
    slow = corrected_by_prefix(conv.snn, conv.ann, x, steps,
                               lambda pop, target, rec: bc._correct(pop, target, rec, steps,
                                                                    mode)[0],
                               bc.GAIN_ROUNDS if mode == "gain" else 1)
    assert len(ifs(slow)) == 4
    field = {"bias": "bias", "v0": "v0", "gain": "out_scale"}[mode]
    changed = 0
    for a, b, orig in zip(ifs(fast), ifs(slow), ifs(conv.snn)):
        assert np.array_equal(getattr(a, field), getattr(b, field)), a.name
        changed += not np.array_equal(getattr(a, field), getattr(orig, field))
    assert changed >= 3  # the corrections did something to compare


# -- the SNN graph file --------------------------------------------------------------------------
def test_snn_graph_saves_and_loads_back_equal(tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(0, 1, size=(16, 2, 6, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(concat_net(), x, Recipe(norm="channel-percentile", v0="half",
                                              bias_correction=True, correction_steps=4)).snn
    save_graph(snn, tmp_path / "net.snn")
    back = load_graph(tmp_path / "net.snn")
    assert back.outputs == snn.outputs
    assert dict(back.meta) == dict(snn.meta)
    assert back.meta["recipe"]["norm"] == "channel-percentile"
    assert len(back) == len(snn)
    for a, b in zip(snn, back):
        assert (type(a), a.name, a.inputs, a.shape, a.origin) == \
            (type(b), b.name, b.inputs, b.shape, b.origin)
        assert a.attributes() == b.attributes()
        assert a.arrays().keys() == b.arrays().keys()
        for k, arr in a.arrays().items():
            assert arr.dtype == b.arrays()[k].dtype and np.array_equal(arr, b.arrays()[k]), k
    r1 = simulate(snn, x, 16, record=[p.name for p in ifs(snn)])
    r2 = simulate(back, x, 16, record=[p.name for p in ifs(snn)])
    assert np.array_equal(next(iter(r1.predictions.values())), next(iter(r2.predictions.values())))
    for k in r1.recorded:
        assert np.array_equal(r1.recorded[k], r2.recorded[k])


def test_convert_ann_takes_an_ann_graph() -> None:
    x = np.random.default_rng(0).uniform(0, 1, size=(16, 3))
    ann = onnx_to_ann(mlp_with_clip(0.5))
    conv = convert_ann(ann, x, Recipe(norm="max"))
    assert conv.ann.outputs == ann.outputs
    assert [p.name for p in ifs(conv.snn)] == ["clip"]
    assert set(conv.stats) == {"clip"}
