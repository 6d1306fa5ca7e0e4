"""Edge cases of the composition of linear layers (onnx2snn.compose) and of ``prepare_for_loihi``.

Each case either gives the values of the layers it replaces (float64, random inputs) or is refused
with a ``PassError`` naming the layers; none may give other values silently. Pairs of layers are
checked against ``e.forward(p.forward(x))``; whole graphs (IF populations between the linear
layers) run in the float simulator before and after ``prepare_for_loihi``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onnx2snn.backends.numpy import simulate
from onnx2snn.compose import as_conv, compose, conv_adjoint, dense_after
from onnx2snn.errors import PassError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Add, Affine, AvgPool, Concat, Conv, Dense, Input, Node, Reshape
from onnx2snn.ir.spiking import IF, Readout
from onnx2snn.quantize import prepare_for_loihi

RNG = np.random.default_rng(7)
HW = (8, 8)


def _conv(name: str, src: str, cin: int, cout: int, k: int | tuple[int, int],
          in_hw: tuple[int, int] = HW, *, stride: int | tuple[int, int] = 1, pad: int = 0,
          pads: tuple[int, int, int, int] | None = None, groups: int = 1, dilation: int = 1,
          bias: bool = True) -> Conv:
    kh, kw = (k, k) if isinstance(k, int) else k
    c = Conv(name=name, inputs=(src,), shape=(cout, 1, 1),
             weight=RNG.normal(size=(cout, cin // groups, kh, kw)),
             bias=RNG.normal(size=cout) if bias else None,
             strides=(stride, stride) if isinstance(stride, int) else stride,
             pads=pads if pads is not None else (pad,) * 4, dilations=(dilation, dilation),
             groups=groups)
    return c.replace(shape=c.infer_shape([(cin,) + in_hw]))


def _composes(e: Conv | Dense, p: Conv | Dense, in_shape: tuple[int, ...]) -> Conv | Dense:
    """compose(e, p) computes e(p(x)) (a Dense reads its input flattened)."""
    layer = compose(e, p, in_shape)
    assert layer.name == e.name and layer.inputs == p.inputs and layer.shape == e.shape
    x = RNG.normal(size=(3,) + in_shape)
    mid = p.forward(x)
    want = e.forward(mid.reshape(3, -1) if isinstance(e, Dense) else mid)
    got = layer.forward(x.reshape(3, -1) if isinstance(layer, Dense) else x)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    return layer


# -- pairs ---------------------------------------------------------------------------------------
def _pairs() -> dict[str, tuple[Conv, Conv]]:
    out: dict[str, tuple[Conv, Conv]] = {}
    p = _conv("p", "x", 4, 6, 1)
    out["E 1x1 stride 2 after P 1x1 (P-pointwise rule, E's stride)"] = (
        _conv("e", "p", 6, 5, 1, stride=2), p)
    p = _conv("p", "x", 4, 6, 2, stride=2)
    out["E 1x1 stride 2 after a patch conv"] = (_conv("e", "p", 6, 5, 1, p.shape[1:], stride=2), p)
    p = _conv("p", "x", 4, 6, 1, stride=2)
    out["E 1x1 after P 1x1 stride 2 (E-pointwise rule, P's stride)"] = (
        _conv("e", "p", 6, 5, 1, p.shape[1:]), p)
    p = _conv("p", "x", 4, 6, 3, pad=1, groups=2)
    out["grouped E 1x1 after grouped P 3x3"] = (_conv("e", "p", 6, 9, 1, groups=3), p)
    p = _conv("p", "x", 4, 6, 1, groups=2, bias=False)
    out["grouped padded E 3x3 after grouped P 1x1"] = (
        _conv("e", "p", 6, 9, 3, pad=1, groups=3), p)
    p = _conv("p", "x", 4, 6, 3, pad=2, dilation=2)
    out["dilated P under E 1x1"] = (_conv("e", "p", 6, 5, 1), p)
    p = _conv("p", "x", 4, 6, 1)
    out["dilated unpadded E over a biased P 1x1"] = (_conv("e", "p", 6, 5, 3, p.shape[1:],
                                                           dilation=2), p)
    p = _conv("p", "x", 4, 6, 2, stride=2, bias=False)
    out["strided E with asymmetric pads over a patch conv"] = (
        _conv("e", "p", 6, 5, 3, p.shape[1:], stride=2, pads=(1, 0, 0, 1)), p)
    p = _conv("p", "x", 4, 6, 2, stride=2)
    out["strided unpadded E over a biased patch conv"] = (
        _conv("e", "p", 6, 5, 3, p.shape[1:], stride=2), p)
    p = _conv("p", "x", 4, 6, (2, 1), stride=(2, 1), bias=False)
    out["rectangular patch conv under a rectangular E"] = (
        _conv("e", "p", 6, 5, (3, 2), p.shape[1:], stride=(1, 2), pads=(1, 0, 1, 0)), p)
    p = _conv("p", "x", 4, 6, (1, 3), pads=(0, 1, 0, 1))
    out["rectangular padded P under E 1x1"] = (_conv("e", "p", 6, 5, 1, p.shape[1:]), p)
    p = _conv("p", "x", 4, 6, 1, pads=(1, 0, 0, 0))
    out["padded P 1x1 (not pointwise) under E 1x1"] = (_conv("e", "p", 6, 5, 1, p.shape[1:]), p)
    p = _conv("p", "x", 4, 6, 1, bias=False)
    out["padded E 1x1 over an unbiased P 1x1"] = (
        _conv("e", "p", 6, 5, 1, pads=(1, 0, 0, 0)), p)
    p = _conv("p", "x", 4, 6, 2, (9, 9), stride=2)
    out["E over a patch conv on a map its kernel does not divide (9x9)"] = (
        _conv("e", "p", 6, 5, 3, p.shape[1:], stride=2, pads=(1, 1, 0, 0)).replace(bias=None),
        p.replace(bias=None))
    p = _conv("p", "x", 4, 6, 3, pad=1)
    out["E 1x1 stride 2 after a padded 3x3"] = (_conv("e", "p", 6, 5, 1, stride=2), p)
    p = _conv("p", "x", 4, 6, 3, stride=2, pad=1, dilation=2)
    out["E 1x1 stride 2 after a strided dilated 3x3"] = (
        _conv("e", "p", 6, 5, 1, p.shape[1:], stride=2), p)
    p = _conv("p", "x", 4, 6, 3, (7, 7), pad=1)
    out["E 1x1 stride 3 after a 3x3 on 7x7"] = (_conv("e", "p", 6, 5, 1, p.shape[1:], stride=3), p)
    # a padded E over a biased map: the edge positions get another bias (one per position)
    p = _conv("p", "x", 4, 6, 2, stride=2)
    out["padded E over a biased patch conv (a bias per position)"] = (
        _conv("e", "p", 6, 5, 3, p.shape[1:], stride=2, pads=(1, 0, 0, 1)), p)
    p = _conv("p", "x", 4, 6, 1)
    out["padded E 1x1 over a biased P 1x1 (a bias per position)"] = (
        _conv("e", "p", 6, 5, 1, pads=(1, 0, 0, 0)), p)
    return out


PAIRS = _pairs()


@pytest.mark.parametrize("case", list(PAIRS))
def test_conv_pairs_compose_exactly(case: str) -> None:
    e, p = PAIRS[case]
    in_hw = (7, 7) if "7x7" in case else (9, 9) if "9x9" in case else HW
    _composes(e, p, (4,) + in_hw)


def _refused_pairs() -> dict[str, tuple[Conv, Conv, str]]:
    out: dict[str, tuple[Conv, Conv, str]] = {}
    p = _conv("p", "x", 4, 6, 1, stride=2)
    out["E 3x3 after P 1x1 stride 2"] = (_conv("e", "p", 6, 5, 3, p.shape[1:], pad=1), p,
                                         "'e'.*'p'")
    p = _conv("p", "x", 4, 6, 2, (9, 9), stride=2, bias=False)
    out["E padding the bottom of a patch conv on a map its kernel does not divide"] = (
        _conv("e", "p", 6, 5, 3, p.shape[1:], pads=(0, 0, 1, 0)), p, "'e'.*'p'")
    p = _conv("p", "x", 4, 6, 2, stride=2, bias=False)
    out["dilated E over a patch conv"] = (_conv("e", "p", 6, 5, 3, p.shape[1:], pad=2,
                                                dilation=2), p, "'e'.*'p'")
    p = _conv("p", "x", 4, 6, 3, pad=1, bias=False)
    out["E 1x1 stride 2, padded, after a 3x3"] = (_conv("e", "p", 6, 5, 1, stride=2, pad=1), p,
                                                  "'e'.*'p'")
    return out


REFUSED = _refused_pairs()


@pytest.mark.parametrize("case", list(REFUSED))
def test_conv_pairs_no_convolution_expresses_are_refused(case: str) -> None:
    e, p, message = REFUSED[case]
    in_hw = (9, 9) if "divide" in case else HW
    with pytest.raises(PassError, match=message):
        compose(e, p, (4,) + in_hw)


def _random_conv(rng: np.random.Generator, name: str, src: str, cin: int,
                 in_hw: tuple[int, int]) -> Conv | None:
    groups = int(rng.choice([1, cin])) if cin > 1 else 1
    cout = cin if groups > 1 else int(rng.integers(1, 5))
    k = [1, 2, 3][int(rng.integers(3))]
    kh, kw = (k, k) if rng.random() < 0.7 else (int(v) for v in rng.choice([1, 2, 3], size=2))
    c = Conv(name=name, inputs=(src,), shape=(1,), weight=rng.normal(size=(cout, cin // groups, kh,
                                                                           kw)),
             bias=rng.normal(size=cout) if rng.random() < 0.5 else None,
             strides=(kh, kw) if rng.random() < 0.3
             else tuple(int(v) for v in rng.choice([1, 1, 2, 3], size=2)),
             pads=(0,) * 4 if rng.random() < 0.5
             else tuple(int(v) for v in rng.choice([0, 0, 1, 2], size=4)),
             dilations=tuple(int(v) for v in rng.choice([1, 1, 2], size=2)), groups=groups)
    try:
        return c.replace(shape=c.infer_shape([(cin,) + in_hw]))
    except Exception:
        return None  # the kernel does not fit


def test_random_conv_pairs_compose_exactly_or_are_refused() -> None:
    """Over random geometries (kernels 1–3, strides 1–3, pads 0–2 each side, dilations, depthwise
    or dense), compose(e, p) never gives other values than e(p(x)): it composes or refuses."""
    rng = np.random.default_rng(123)
    composed = refused = 0
    while composed + refused < 1000:
        cin = int(rng.integers(1, 4))
        in_hw = (int(rng.integers(4, 10)), int(rng.integers(4, 10)))
        p = _random_conv(rng, "p", "x", cin, in_hw)
        e = None if p is None else _random_conv(rng, "e", "p", p.shape[0], p.shape[1:])
        if p is None or e is None:
            continue
        try:
            layer = compose(e, p, (cin,) + in_hw)
        except PassError as err:
            assert "'e'" in str(err) and "'p'" in str(err)
            refused += 1
            continue
        x = rng.normal(size=(2, cin) + in_hw)
        np.testing.assert_allclose(layer.forward(x), e.forward(p.forward(x)), rtol=1e-9,
                                   atol=1e-9, err_msg=f"{e.attributes()} ∘ {p.attributes()}")
        composed += 1
    assert composed > 200 and refused > 200, (composed, refused)


def test_random_pairs_over_patch_convs_compose_exactly_or_are_refused() -> None:
    """P of kernel = stride on maps of any size (divisible or not), E of random kernel, stride
    and padding: composed exactly or refused."""
    rng = np.random.default_rng(9)
    composed = undivided = 0
    for _ in range(600):
        h, w = (int(v) for v in rng.integers(4, 12, size=2))
        kp = (int(rng.integers(2, 4)), int(rng.integers(2, 4)))
        p = Conv(name="p", inputs=("x",), shape=(1,), weight=rng.normal(size=(3, 2) + kp),
                 bias=rng.normal(size=3) if rng.random() < 0.3 else None, strides=kp)
        p = p.replace(shape=p.infer_shape([(2, h, w)]))
        e = Conv(name="e", inputs=("p",), shape=(1,),
                 weight=rng.normal(size=(4, 3, int(rng.integers(1, 4)), int(rng.integers(1, 4)))),
                 strides=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                 pads=tuple(int(v) for v in rng.choice([0, 0, 1, 2], size=4)))
        try:
            e = e.replace(shape=e.infer_shape([p.shape]))
        except Exception:
            continue
        try:
            layer = compose(e, p, (2, h, w))
        except PassError:
            continue
        x = rng.normal(size=(2, 2, h, w))
        np.testing.assert_allclose(layer.forward(x), e.forward(p.forward(x)), rtol=1e-9,
                                   atol=1e-9, err_msg=f"{e.attributes()} ∘ {p.attributes()}")
        composed += 1
        undivided += bool(h % kp[0] or w % kp[1])
    assert composed > 100 and undivided > 50, (composed, undivided)


def test_dense_after_a_grouped_strided_conv_and_a_pool() -> None:
    p = _conv("p", "x", 4, 6, 3, stride=2, pad=1, groups=2)
    e = Dense(name="e", inputs=("f",), shape=(3,), weight=RNG.normal(size=(3, p.weight.shape[0]
                                                                              * 16)),
              bias=RNG.normal(size=3))
    _composes(e, p, (4,) + HW)
    gap = as_conv(AvgPool(name="gap", inputs=("x",), shape=(4, 1, 1), kernel=HW), (4,) + HW)
    _composes(e.replace(weight=RNG.normal(size=(3, 4))), gap, (4,) + HW)


@pytest.mark.parametrize("kw", [{"pads": (2, 0, 1, 3), "stride": (2, 1)},
                                {"k": (2, 3), "dilation": 2, "stride": 2, "groups": 2, "pad": 1},
                                {"k": (1, 3), "stride": (3, 2), "pads": (0, 1, 0, 0)}])
def test_conv_adjoint_is_the_transpose_for_asymmetric_geometry(kw: dict[str, Any]) -> None:
    k = kw.pop("k", 3)
    p = _conv("p", "x", 4, 6, k, (7, 9), bias=False, **kw)
    n_in = 4 * 7 * 9
    m = p.forward(np.eye(n_in).reshape(n_in, 4, 7, 9)).reshape(n_in, -1).T
    y = RNG.normal(size=(2,) + tuple(p.shape))
    got = conv_adjoint(p, y, (4, 7, 9)).reshape(2, -1)
    np.testing.assert_allclose(got, y.reshape(2, -1) @ m, rtol=1e-12, atol=1e-12)


# -- pools and affine maps -----------------------------------------------------------------------
@pytest.mark.parametrize("h", [7, 8])
@pytest.mark.parametrize("ceil", [False, True])
@pytest.mark.parametrize("pads,counted", [((0, 0, 0, 0), False), ((1, 1, 1, 1), True),
                                          ((0, 0, 1, 1), True), ((1, 1, 1, 1), False)])
def test_pools_become_convolutions_or_are_refused(h: int, ceil: bool,
                                                  pads: tuple[int, int, int, int],
                                                  counted: bool) -> None:
    pool = AvgPool(name="pool", inputs=("x",), shape=(3, 1, 1), kernel=(3, 3), strides=(2, 2),
                   pads=pads, count_include_pad=counted, ceil_mode=ceil)
    pool = pool.replace(shape=pool.infer_shape([(3, h, h)]))
    x = RNG.normal(size=(2, 3, h, h))
    try:
        conv = as_conv(pool, (3, h, h))
    except PassError as e:
        assert "'pool'" in str(e) and "edge windows" in str(e)
        assert (ceil or (any(pads) and not counted)), "refused a pool a convolution expresses"
        return
    np.testing.assert_allclose(conv.forward(x), pool.forward(x), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("h", [7, 8])
@pytest.mark.parametrize("pool", [
    {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)},
    {"kernel": (3, 3), "strides": (2, 2), "ceil_mode": True},
    {"kernel": (3, 2), "strides": (2, 3), "pads": (1, 0, 2, 1), "ceil_mode": True},
    {"kernel": (3, 3), "strides": (2, 2), "pads": (0, 0, 1, 1), "ceil_mode": True,
     "count_include_pad": True},
    {"kernel": (2, 2), "strides": (2, 2)},
])
def test_dense_after_any_pool_behind_a_flatten(h: int, pool: dict[str, Any]) -> None:
    """A Dense reading a pool through a flatten composes with it whatever the pool's divisors
    (uncounted padding, ceil mode): dense_after, exact."""
    p = AvgPool(name="pool", inputs=("x",), shape=(3, 1, 1), **pool)
    p = p.replace(shape=p.infer_shape([(3, h, h)]))
    e = Dense(name="fc", inputs=("f",), shape=(4,), weight=RNG.normal(size=(4, int(np.prod(
        p.shape)))), bias=RNG.normal(size=4))
    layer = dense_after(e, p, (3, h, h))
    x = RNG.normal(size=(2, 3, h, h))
    np.testing.assert_allclose(layer.forward(x.reshape(2, -1)), e.forward(p.forward(x).reshape(
        2, -1)), rtol=1e-12, atol=1e-12)


def test_dense_after_an_affine_map_that_varies_within_channels() -> None:
    aff = Affine(name="a", inputs=("x",), shape=(3, 4, 4), scale=RNG.normal(size=(3, 4, 4)),
                 shift=RNG.normal(size=(1, 4, 1)))
    e = Dense(name="fc", inputs=("f",), shape=(5,), weight=RNG.normal(size=(5, 48)), bias=None)
    layer = dense_after(e, aff, (3, 4, 4))
    x = RNG.normal(size=(2, 3, 4, 4))
    np.testing.assert_allclose(layer.forward(x.reshape(2, -1)),
                               e.forward(aff.forward(x).reshape(2, -1)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,scale,shift", [
    ((5,), RNG.normal(size=5), RNG.normal(size=5)),
    ((5,), np.array(2.0), None),
    ((3, 4, 4), np.array(0.5), np.array(-1.0)),
    ((1, 4, 4), np.array([[[3.0]]]), None),
])
def test_affine_maps_become_synapse_layers(shape: tuple[int, ...], scale: np.ndarray,
                                           shift: np.ndarray | None) -> None:
    aff = Affine(name="a", inputs=("x",), shape=shape, scale=scale, shift=shift)
    layer = as_conv(aff, shape)
    x = RNG.normal(size=(2,) + shape)
    np.testing.assert_allclose(layer.forward(x), aff.forward(x), rtol=1e-15)
    assert isinstance(layer, Dense if len(shape) == 1 else Conv)


# -- whole graphs --------------------------------------------------------------------------------
class _Net:
    """An SNN graph on a (2, 8, 8) input, built node by node with inferred shapes."""

    def __init__(self) -> None:
        self.nodes: list[Node] = [Input(name="x", inputs=(), shape=(2,) + HW)]
        self.shapes: dict[str, tuple[int, ...]] = {"x": (2,) + HW}
        self.rng = np.random.default_rng(11)

    def add(self, node: Node) -> str:
        node = node.replace(shape=node.infer_shape([self.shapes[i] for i in node.inputs]))
        self.nodes.append(node)
        self.shapes[node.name] = node.shape
        return node.name

    def conv(self, name: str, src: str, cout: int, k: int, *, bias: bool = True,
             groups: int = 1, **kw: Any) -> str:
        cin = self.shapes[src][0]
        w = self.rng.normal(size=(cout, cin // groups, k, k)) / np.sqrt(cin * k * k / groups)
        return self.add(Conv(name=name, inputs=(src,), shape=(1,), weight=w, groups=groups,
                             bias=self.rng.normal(size=cout) * 0.1 if bias else None, **kw))

    def dense(self, name: str, src: str, out: int) -> str:
        n = int(np.prod(self.shapes[src]))
        return self.add(Dense(name=name, inputs=(src,), shape=(1,),
                              weight=self.rng.normal(size=(out, n)) / np.sqrt(n),
                              bias=self.rng.normal(size=out) * 0.1))

    def pop(self, name: str, src: str) -> str:
        return self.add(IF(name=name, inputs=(src,), shape=(1,), threshold=np.array(0.7),
                           out_scale=np.array(0.7), v0=np.array(0.35)))

    def flat(self, name: str, src: str) -> str:
        return self.add(Reshape(name=name, inputs=(src,),
                                shape=(int(np.prod(self.shapes[src])),)))

    def op(self, cls: type[Node], name: str, *srcs: str, **kw: Any) -> str:
        return self.add(cls(name=name, inputs=srcs, shape=(1,), **kw))

    def stem(self) -> str:
        return self.pop("r0", self.conv("c0", "x", 4, 3, pads=(1, 1, 1, 1)))

    def graph(self, last: str) -> Graph:
        if len(self.shapes[last]) != 1:
            last = self.dense("fc", self.flat("flat", self.pop("r_last", last)), 3)
        out = self.add(Readout(name="out", inputs=(last,), shape=(1,)))
        return Graph(tuple(self.nodes), (out,))


def _add_gap_dense(n: _Net) -> str:
    """A global pool over a residual sum, flattened into a Dense: the pool alone has no form over
    the 3×3 term, but it is composed into the Dense and no longer needed."""
    r = n.stem()
    s = n.op(Add, "sum", n.conv("c", r, 4, 3, pads=(1, 1, 1, 1)), r)
    gap = n.op(AvgPool, "gap", s, kernel=HW)
    return n.dense("fc", n.flat("f", gap), 3)


def _dense_flat_add_of_convs(n: _Net) -> str:
    r = n.stem()
    s = n.op(Add, "sum", n.conv("a1", r, 5, 3, pads=(1, 1, 1, 1)), n.conv("a2", r, 5, 1))
    return n.dense("fc", n.flat("f", s), 3)


def _three_linear_layers(n: _Net) -> str:
    r = n.stem()
    p = n.conv("p", r, 6, 1)
    pool = n.op(AvgPool, "pool", p, kernel=(2, 2), strides=(2, 2))
    gain = n.op(Affine, "gain", pool, scale=n.rng.normal(size=(6, 1, 1)),
                shift=n.rng.normal(size=(6, 1, 1)))
    return n.conv("e", gain, 5, 3)


def _three_denses(n: _Net) -> str:
    d1 = n.dense("d1", n.flat("f", n.stem()), 6)
    return n.dense("d3", n.dense("d2", d1, 5), 3)


def _read_by_population_and_synapse(n: _Net) -> str:
    r = n.stem()
    p = n.conv("p", r, 6, 3, pads=(1, 1, 1, 1))
    r1 = n.pop("r1", p)
    r2 = n.pop("r2", n.conv("e", p, 6, 1))
    return n.op(Add, "s", n.conv("q1", r1, 6, 1), n.conv("q2", r2, 6, 1))


def _nested_sums(n: _Net) -> str:
    r = n.stem()
    s1 = n.op(Add, "s1", n.conv("a1", r, 4, 1), n.conv("a2", r, 4, 3, pads=(1, 1, 1, 1)))
    s2 = n.op(Add, "s2", s1, r)
    r3 = n.pop("r3", s2)
    e = n.conv("e", n.op(Add, "s3", s2, s1), 5, 1)
    return n.op(Add, "z", e, n.conv("zz", r3, 5, 1))


def _concat_with_a_linear_part(n: _Net) -> str:
    r = n.stem()
    cat = n.op(Concat, "cat", n.conv("a", r, 3, 1, bias=False), r, axis=0)
    return n.conv("e", cat, 5, 3, pads=(1, 1, 1, 1))


def _pool_over_concat_with_a_linear_part(n: _Net) -> str:
    r = n.stem()
    cat = n.op(Concat, "cat", n.conv("a", r, 3, 1), r, axis=0)
    return n.conv("e", n.op(AvgPool, "pool", cat, kernel=(2, 2), strides=(2, 2)), 5, 3)


def _gain_over_concat_into_dense(n: _Net) -> str:
    r = n.stem()
    cat = n.op(Concat, "cat", n.conv("a", r, 3, 3, pads=(1, 1, 1, 1)), r, axis=0)
    gain = n.op(Affine, "gain", cat, scale=n.rng.normal(size=(7, 1, 1)),
                shift=n.rng.normal(size=(7, 1, 1)))
    return n.dense("fc", n.flat("f", gain), 3)


def _spatial_concat_with_a_linear_part(n: _Net) -> str:
    r = n.stem()
    cat = n.op(Concat, "cat", n.conv("a", r, 4, 3, pads=(1, 1, 1, 1)), r, axis=1)
    return n.dense("fc", n.flat("f", cat), 3)


def _vector_affine_over_a_sum(n: _Net) -> str:
    f = n.flat("f", n.stem())
    s = n.op(Add, "s", n.dense("d1", f, 6), n.dense("d2", f, 6))
    gain = n.op(Affine, "gain", s, scale=n.rng.normal(size=6), shift=n.rng.normal(size=6))
    return n.dense("fc", n.pop("r1", gain), 3)


def _vector_affine_after_flatten(n: _Net) -> str:
    gain = n.op(Affine, "gain", n.flat("f", n.stem()), scale=n.rng.normal(size=256))
    return n.dense("fc", gain, 3)


def _pool_into_sum_then_1x1(n: _Net) -> str:
    pool = n.op(AvgPool, "pool", n.stem(), kernel=(2, 2), strides=(2, 2))
    s = n.op(Add, "s", n.conv("c", pool, 4, 3, pads=(1, 1, 1, 1)), pool)
    return n.conv("e", s, 6, 1)


def _pool_into_strided_1x1(n: _Net) -> str:
    pool = n.op(AvgPool, "pool", n.stem(), kernel=(2, 2), strides=(2, 2))
    return n.conv("e", pool, 4, 1, strides=(2, 2))


def _strided_1x1_after_3x3(n: _Net) -> str:
    return n.conv("e", n.conv("p", n.stem(), 6, 3, pads=(1, 1, 1, 1)), 6, 1, strides=(2, 2))


def _counted_pool_into_1x1(n: _Net) -> str:
    pool = n.op(AvgPool, "pool", n.stem(), kernel=(3, 3), pads=(1, 1, 1, 1),
                count_include_pad=True)
    return n.conv("e", pool, 4, 1)


def _pool_into_padded_depthwise(n: _Net) -> str:
    pool = n.op(AvgPool, "pool", n.stem(), kernel=(2, 2), strides=(2, 2))
    return n.conv("e", pool, 4, 3, groups=4, pads=(1, 1, 1, 1))


def _readout_of_a_sum_of_denses(n: _Net) -> str:
    r = n.stem()
    return n.op(Add, "s", n.dense("d1", n.flat("f1", r), 3), n.dense("d2", n.flat("f2", r), 3))


def _uncounted_pool_into_dense(n: _Net) -> str:
    pool = n.op(AvgPool, "pool", n.stem(), kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    return n.dense("fc", n.flat("f", pool), 3)


def _ceil_pool_into_dense(n: _Net) -> str:
    pool = n.op(AvgPool, "pool", n.stem(), kernel=(3, 3), strides=(2, 2), ceil_mode=True)
    return n.dense("fc", n.flat("f", pool), 3)


def _uncounted_pool_over_concat_into_dense(n: _Net) -> str:
    r = n.stem()
    cat = n.op(Concat, "cat", n.conv("a", r, 3, 3, pads=(1, 1, 1, 1)), r, axis=0)
    pool = n.op(AvgPool, "pool", cat, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    return n.dense("fc", n.flat("f", pool), 3)


def _pixel_affine_into_dense(n: _Net) -> str:
    gain = n.op(Affine, "gain", n.stem(), scale=n.rng.normal(size=(4, 8, 8)),
                shift=n.rng.normal(size=(1, 8, 8)))
    return n.dense("fc", n.flat("f", gain), 3)


def _vector_affine_over_a_concat(n: _Net) -> str:
    f = n.flat("f", n.stem())
    cat = n.op(Concat, "cat", n.dense("d1", f, 6), n.dense("d2", f, 4), axis=0)
    gain = n.op(Affine, "gain", cat, scale=n.rng.normal(size=10), shift=n.rng.normal(size=10))
    return n.dense("fc", gain, 3)


def _pool_on_7x7_into_conv_padded_at_the_start(n: _Net) -> str:
    r = n.pop("r0", n.conv("c0", "x", 4, 2))  # 7×7: the pool leaves the last row and column out
    pool = n.op(AvgPool, "pool", r, kernel=(2, 2), strides=(2, 2))
    return n.conv("e", pool, 5, 2, pads=(1, 1, 0, 0))


# a padded convolution over a biased map: one bias per output position (``compose``)
def _biased_part_under_padded_conv(n: _Net) -> str:
    r = n.stem()
    cat = n.op(Concat, "cat", n.conv("a", r, 3, 1), r, axis=0)
    return n.conv("e", cat, 5, 3, pads=(1, 1, 1, 1))


def _normalized_input_into_padded_conv(n: _Net) -> str:
    norm = n.op(Affine, "norm", "x", scale=np.array([2.0, 0.5]).reshape(2, 1, 1),
                shift=np.array([-1.0, 0.3]).reshape(2, 1, 1))
    return n.conv("c", norm, 4, 3, pads=(1, 1, 1, 1))


NETS = {f.__name__.strip("_"): f for f in (
    _add_gap_dense, _dense_flat_add_of_convs, _three_linear_layers, _three_denses,
    _read_by_population_and_synapse, _nested_sums, _concat_with_a_linear_part,
    _pool_over_concat_with_a_linear_part, _gain_over_concat_into_dense,
    _spatial_concat_with_a_linear_part, _vector_affine_over_a_sum, _vector_affine_after_flatten,
    _pool_into_sum_then_1x1, _pool_into_strided_1x1, _strided_1x1_after_3x3,
    _counted_pool_into_1x1, _pool_into_padded_depthwise, _readout_of_a_sum_of_denses,
    _uncounted_pool_into_dense, _ceil_pool_into_dense, _uncounted_pool_over_concat_into_dense,
    _pixel_affine_into_dense, _vector_affine_over_a_concat, _pool_on_7x7_into_conv_padded_at_the_start,
    _biased_part_under_padded_conv, _normalized_input_into_padded_conv)}


def _source(g: Graph, name: str) -> Node:
    n = g[name]
    while isinstance(n, Reshape):
        n = g[n.inputs[0]]
    return n


@pytest.mark.parametrize("net", list(NETS))
def test_prepared_graphs_compute_what_they_computed(net: str) -> None:
    n = _Net()
    g = n.graph(NETS[net](n))
    prepared = prepare_for_loihi(g)
    assert {"avgpool", "affine", "concat"}.isdisjoint(m.kind for m in prepared.nodes)
    for m in prepared.nodes:
        if isinstance(m, (Conv, Dense)):
            assert isinstance(_source(prepared, m.inputs[0]), (IF, Input)), m.name
    x = np.random.default_rng(5).uniform(0, 1, size=(4, 2) + HW)
    a = simulate(g, x, 12, dtype=np.float64).predictions
    b = simulate(prepared, x, 12, dtype=np.float64).predictions
    for k in a:
        assert np.abs(a[k]).max() > 0.01, "the net is silent: the test would prove nothing"
        np.testing.assert_allclose(b[k], a[k], rtol=1e-9, atol=1e-9)


def _ceil_pool(n: _Net) -> str:
    c = n.pop("r0", n.conv("c0", "x", 4, 2))  # 7×7
    return n.conv("e", n.op(AvgPool, "pool", c, kernel=(2, 2), strides=(2, 2), ceil_mode=True),
                  4, 1)


def _gain_over_concat_into_population(n: _Net) -> str:
    r = n.stem()
    cat = n.op(Concat, "cat", n.conv("a", r, 3, 3, pads=(1, 1, 1, 1)), r, axis=0)
    return n.op(Affine, "gain", cat, scale=n.rng.normal(size=(7, 1, 1)))


def _gap_over_a_sum_into_population(n: _Net) -> str:
    r = n.stem()
    gap = n.op(AvgPool, "gap", n.op(Add, "sum", n.conv("c", r, 4, 3, pads=(1, 1, 1, 1)), r),
               kernel=HW)
    return n.dense("fc", n.pop("r1", n.flat("f", gap)), 3)  # the pool is still needed


def _pixel_affine_into_population(n: _Net) -> str:
    return n.op(Affine, "gain", n.stem(), scale=n.rng.normal(size=(4, 8, 8)))


def _uncounted_pool_into_population_and_dense(n: _Net) -> str:
    pool = n.op(AvgPool, "pool", n.stem(), kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    return n.op(Add, "s", n.dense("fc", n.flat("f", pool), 3),
                n.dense("fc2", n.flat("f2", n.pop("r1", pool)), 3))


REFUSED_NETS = {
    "gap_over_a_sum_into_population": (_gap_over_a_sum_into_population, r"'gap/term0'.*'c'"),
    "ceil_pool": (_ceil_pool, r"'pool'.*edge windows"),
    "pixel_affine_into_population": (_pixel_affine_into_population,
                                     r"'gain'.*varies within a channel"),
    "uncounted_pool_into_population_and_dense": (_uncounted_pool_into_population_and_dense,
                                                 r"'pool'.*edge windows"),
    "gain_over_concat_into_population": (_gain_over_concat_into_population, r"'gain'.*'r_last'"),
}


@pytest.mark.parametrize("net", list(REFUSED_NETS))
def test_graphs_without_a_loihi_form_are_refused_by_name(net: str) -> None:
    build, message = REFUSED_NETS[net]
    n = _Net()
    with pytest.raises(PassError, match=message):
        prepare_for_loihi(n.graph(build(n)))


# -- the composed geometries in Lava -------------------------------------------------------------
def _geometry_net(digits_onnx: Any) -> Any:
    """A digits net (1×8×8) whose composed synapses have the geometries the rules make: a
    strided 1×1 after a padded 3×3 (3×3, stride 2, pad 1), a padded 3×3 after a 2×2 pool
    (6×6, stride 2, pad 2), a 1×1 after a dilated 3×3 (3×3, dilation 2)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(4)
    inits: list[Any] = []

    def w(*shape: int) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        a = rng.normal(size=shape) * np.sqrt(2.0 / fan_in) if len(shape) > 1 \
            else rng.normal(size=shape) * 0.05
        inits.append(numpy_helper.from_array(a.astype(np.float32), f"w{len(inits)}"))
        return str(inits[-1].name)

    def conv(x: str, out: str, cin: int, cout: int, k: int, bias: bool = True,
             **attrs: Any) -> Any:
        ins = [x, w(cout, cin, k, k)] + ([w(cout)] if bias else [])
        return helper.make_node("Conv", ins, [out], name=out, **attrs)

    nodes = [
        conv("x", "c0", 1, 6, 3, pads=[1] * 4), helper.make_node("Relu", ["c0"], ["r0"]),
        conv("r0", "p", 6, 6, 3, pads=[1] * 4),                         # linear 3×3
        conv("p", "e", 6, 8, 1, strides=[2, 2]), helper.make_node("Relu", ["e"], ["r1"]),
        helper.make_node("AveragePool", ["r1"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        conv("pool", "c2", 8, 8, 3, pads=[1] * 4), helper.make_node("Relu", ["c2"], ["r2"]),
        conv("r0", "dil", 6, 4, 3, pads=[2] * 4, dilations=[2, 2]),     # linear, dilated
        conv("dil", "c3", 4, 8, 1, strides=[4, 4]), helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Add", ["r2", "r3"], ["s"]),
        helper.make_node("Flatten", ["s"], ["f"]),
        helper.make_node("Gemm", ["f", w(10, 32), w(10)], ["y"], transB=1),
    ]
    return digits_onnx(nodes, inits, "geometries")


def _geometry_snn(digits_onnx: Any) -> Graph:
    import warnings

    from onnx2snn.convert import Recipe, convert

    calib = np.load(Path(__file__).resolve().parents[1] / "models" / "digits_calib.npz")["x"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(_geometry_net(digits_onnx), calib, Recipe()).snn


def test_composed_geometries_keep_the_float_values(digits_onnx) -> None:
    snn = _geometry_snn(digits_onnx)
    prepared = prepare_for_loihi(snn)
    convs = {n.name: n for n in prepared.nodes if isinstance(n, Conv)}
    geometry = {k: (convs[k].weight.shape[2:], tuple(convs[k].strides), tuple(convs[k].pads),
                    tuple(convs[k].dilations)) for k in convs if k in ("e", "c2", "c3")}
    assert geometry == {"e": ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
                        "c2": ((6, 6), (2, 2), (2, 2, 2, 2), (1, 1)),
                        "c3": ((3, 3), (4, 4), (2, 2, 2, 2), (2, 2))}
    x = np.load(Path(__file__).resolve().parents[1] / "models" / "digits_test.npz")["x"][:8]
    a = simulate(snn, x, 16, dtype=np.float64).predictions
    b = simulate(prepared, x, 16, dtype=np.float64).predictions
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-9, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sdnn", "lif"])
def test_lava_runs_the_composed_geometries_bit_exactly(mode: str, lava_equals_reference,
                                                       digits_onnx) -> None:
    """Lava fixed_pt equals the fixed-point reference on the composed strided, large and dilated
    kernels: every population's messages and the readout's currents, at every step."""
    from onnx2snn.quantize import quantize_for_loihi

    models = Path(__file__).resolve().parents[1] / "models"
    calib = np.load(models / "digits_calib.npz")["x"]
    x = np.load(models / "digits_test.npz")["x"][:2]
    lava_equals_reference(quantize_for_loihi(_geometry_snn(digits_onnx), mode, calib_x=calib).graph, x, 16)
