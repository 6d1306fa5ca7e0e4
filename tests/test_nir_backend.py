"""The NIR backend: export, nir.read, IR -> NIR -> IR round trip, NIR-semantics simulation, refusals,
and import of a NIR graph written by hand (another tool's)."""

from __future__ import annotations

import warnings
from pathlib import Path

import nir
import numpy as np
import pytest

from onnx2snn.backends import get_backend
from onnx2snn.backends.nir import check_nir, from_nir, restore_ir, to_nir, write_nir
from onnx2snn.backends.numpy import simulate
from onnx2snn.convert import Recipe, convert
from onnx2snn.errors import BackendError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Dense, Input, Pad
from onnx2snn.ir.spiking import IF, Readout

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["mlp", "cnn", "resnet", "cnn_clip", "dwsep"]


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    calib = np.load(ROOT / "models/digits_calib.npz")["x"]
    test = np.load(ROOT / "models/digits_test.npz")
    return {"calib": calib, "x": test["x"][:120], "y": test["y"][:120]}


@pytest.fixture(scope="module")
def snns(data: dict[str, np.ndarray]) -> dict[str, Graph]:
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in MODELS:
            # NIR has no max pooling: the ResNet's MaxPool becomes average pooling.
            recipe = Recipe(maxpool="avg") if m == "resnet" else Recipe()
            out[m] = convert(ROOT / f"models/digits_{m}.onnx", data["calib"], recipe).snn
    return out


def assert_structurally_equal(a: Graph, b: Graph, rtol: float) -> None:
    """Same nodes (name, kind, inputs, shape, attributes, array shapes and dtypes) in the same
    order and the same outputs; arrays equal to ``rtol`` (the precision of the file)."""
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    assert a.outputs == b.outputs
    for na, nb in zip(a.nodes, b.nodes):
        assert type(na) is type(nb), na.name
        assert (na.inputs, na.shape, na.origin) == (nb.inputs, nb.shape, nb.origin), na.name
        assert na.attributes() == nb.attributes(), na.name
        arrs_a, arrs_b = na.arrays(), nb.arrays()
        assert arrs_a.keys() == arrs_b.keys(), na.name
        for k, x in arrs_a.items():
            y = arrs_b[k]
            assert (x.shape, x.dtype) == (y.shape, y.dtype), (na.name, k)
            np.testing.assert_allclose(y, x, rtol=rtol, atol=rtol * float(np.abs(x).max()),
                                       err_msg=f"{na.name}.{k}")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("reset", ["zero", "exact"])
@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-6), (np.float64, 1e-13)])
def test_round_trip_is_structurally_equal(snns: dict[str, Graph], tmp_path: Path, model: str,
                                          reset: str, dtype: type, rtol: float) -> None:
    path = write_nir(snns[model], tmp_path / "m.nir", reset=reset, dtype=dtype)
    g = nir.read(path)  # nir's own reader, with its type check, opens every file written
    g.check_types()
    assert g.metadata["dt"] == 1.0 and g.metadata["reset"] == "subtract"
    assert "onnx2snn_version" in g.metadata
    assert_structurally_equal(snns[model], restore_ir(g), rtol)


@pytest.mark.parametrize("form", ["sinabs", "snntorch"])
def test_round_trip_of_consumer_forms(snns: dict[str, Graph], tmp_path: Path, form: str) -> None:
    path = write_nir(snns["cnn"], tmp_path / "m.nir", form=form, dtype=np.float64)
    g = nir.read(path)
    g.check_types()
    assert g.metadata["nir_for"] == form
    assert_structurally_equal(snns["cnn"], restore_ir(g), 1e-13)


def _nir_names(graph: Graph) -> dict[str, str]:
    """IR node name -> the name of its NIR node, from the names a file records."""
    return {ir: nir_name for nir_name, ir in graph.meta["ir_names"].items()}


@pytest.mark.parametrize("model", MODELS)
def test_exact_export_equals_reference_spike_for_spike(snns: dict[str, Graph], tmp_path: Path,
                                                       data: dict[str, np.ndarray],
                                                       model: str) -> None:
    snn = snns[model]
    pops = [n.name for n in snn.nodes if isinstance(n, IF)]
    ref = simulate(snn, data["x"], 32, dtype=np.float64, record=pops)
    graph = from_nir(write_nir(snn, tmp_path / "m.nir", reset="exact", dtype=np.float64))
    name = _nir_names(graph)
    got = simulate(graph, data["x"], 32, dtype=np.float64, record=[name[p] for p in pops])
    for p in pops:
        np.testing.assert_array_equal(got.recorded[name[p]].reshape(ref.recorded[p].shape) > 0,
                                      ref.recorded[p] > 0, p)
    (a,), (b,) = ref.predictions.values(), got.predictions.values()
    np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-9)


def test_default_export_resets_to_zero(snns: dict[str, Graph], tmp_path: Path,
                                       data: dict[str, np.ndarray]) -> None:
    """Reset to zero is what the default file means: it equals the reference run of the same
    network converted with reset=zero, spike for spike."""
    snn = snns["cnn"]
    zero = snn.with_nodes([n.replace(reset="zero") if isinstance(n, IF) else n for n in snn.nodes])
    pops = [n.name for n in zero.nodes if isinstance(n, IF)]
    ref = simulate(zero, data["x"], 16, dtype=np.float64, record=pops)
    g = nir.read(write_nir(snn, tmp_path / "m.nir", dtype=np.float64))
    graph = from_nir(g)
    name = _nir_names(graph)
    assert all(isinstance(g.nodes[name[p]], nir.IF) for p in pops)
    got = simulate(graph, data["x"], 16, dtype=np.float64, record=[name[p] for p in pops])
    for p in pops:
        np.testing.assert_array_equal(got.recorded[name[p]].reshape(ref.recorded[p].shape) > 0,
                                      ref.recorded[p] > 0, p)


def test_sum_pool_folds_into_next_weights_and_avg_pool_option(snns: dict[str, Graph]) -> None:
    g = to_nir(snns["cnn"])
    kinds = {type(n).__name__ for n in g.nodes.values()}
    assert "SumPool2d" in kinds and "AvgPool2d" not in kinds
    assert {type(n).__name__ for n in to_nir(snns["cnn"], pool="avg").nodes.values()} \
        >= {"AvgPool2d"}



def test_no_flatten_fully_connected_layers_are_full_size_convolutions(
        snns: dict[str, Graph], data: dict[str, np.ndarray]) -> None:
    """snnTorch and Norse hand Flatten's per-sample start_dim to torch (flattening the batch),
    spyx flattens channels-last: the default file has no Flatten; the dense layers after the
    (C, H, W) maps are Conv2d nodes whose kernel covers the input, and compute the same."""
    for model in ("mlp", "cnn"):
        g = to_nir(snns[model], dtype=np.float64)
        assert not any(isinstance(n, nir.Flatten) for n in g.nodes.values())
        convs = [n for n in g.nodes.values() if isinstance(n, nir.Conv2d)]
        dense = [n for n in snns[model].nodes if isinstance(n, Dense)]
        assert len(convs) >= len(dense)
        assert all(tuple(c.output_type["output"][1:]) == (1, 1) for c in convs[-len(dense):])
    zero = snns["cnn"].with_nodes([n.replace(reset="zero") if isinstance(n, IF) else n
                                   for n in snns["cnn"].nodes])
    a = simulate(zero, data["x"], 16, dtype=np.float64).predictions
    b = simulate(from_nir(to_nir(snns["cnn"], dtype=np.float64)), data["x"], 16,
                 dtype=np.float64).predictions
    np.testing.assert_allclose(next(iter(b.values())), next(iter(a.values())), atol=1e-9)


def test_names_have_no_dot_and_sort_topologically(snns: dict[str, Graph], tmp_path: Path) -> None:
    """nir.read returns nodes alphabetically and nirtorch 2.0.2 gives up on nodes out of order;
    '.' is not allowed in torch module names: alphabetical order must be a topological order."""
    for model, snn in snns.items():
        for reset in ("zero", "exact"):
            g = nir.read(write_nir(snn, tmp_path / f"{model}.nir", reset=reset))
            names = list(g.nodes)
            assert names == sorted(names) and names[0] == "input" and "output" in names
            assert not any("." in k for k in names), model
            pos = {k: i for i, k in enumerate(names)}
            back = [(a, b) for a, b in g.edges if pos[a] >= pos[b]]
            # only the reset loops of the exact form run backwards (Scale -> I)
            assert all(isinstance(g.nodes[a], nir.Scale) for a, _ in back), (model, back)
            assert reset == "exact" or not back


def test_zero_v_reset_is_left_out_for_nir_1_0_4(snns: dict[str, Graph], tmp_path: Path) -> None:
    """nir 1.0.4 (Sinabs) has no v_reset and refuses a file that holds one; 1.0.8 reads a
    missing v_reset as 0."""
    import h5py

    path = write_nir(snns["cnn"], tmp_path / "m.nir")
    with h5py.File(path) as f:
        ifs = [k for k in f["node/nodes"] if f["node/nodes"][k]["type"][()] in (b"IF", "IF")]
        assert ifs and not any("v_reset" in f["node/nodes"][k] for k in ifs)
    g = nir.read(path)
    assert all(not np.any(g.nodes[k].v_reset) for k in ifs)
    assert "nir 1.0.8" in g.metadata["if_semantics"] and g.metadata["if_reset"] == "zero"
    assert not list(tmp_path.glob(".*partial"))


def test_sinabs_form_declares_subtract_and_is_read_so(snns: dict[str, Graph], tmp_path: Path,
                                                     data: dict[str, np.ndarray]) -> None:
    """--nir-for sinabs: the same nodes declared for nir 1.0.4, whose IF resets by subtraction,
    which the reader honours: the file then equals the reference (subtract) simulation."""
    snn = snns["cnn"]
    path = write_nir(snn, tmp_path / "s.nir", form="sinabs", dtype=np.float64)
    g = nir.read(path)
    assert g.metadata["if_reset"] == "subtract" and "nir 1.0.4" in g.metadata["if_semantics"]
    assert {type(n).__name__ for n in g.nodes.values()} == \
        {type(n).__name__ for n in nir.read(write_nir(snn, tmp_path / "g.nir")).nodes.values()}
    ref = simulate(snn, data["x"], 32, dtype=np.float64).predictions
    got = simulate(from_nir(path), data["x"], 32, dtype=np.float64).predictions
    np.testing.assert_allclose(next(iter(got.values())), next(iter(ref.values())), atol=1e-9)


def test_snntorch_form_is_a_non_leaking_lif_in_its_time_unit(
        snns: dict[str, Graph], tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    """snnTorch 1.0 maps IF to a leaky neuron that returns a tuple; its LIF (dt = 1e-4) with a
    huge tau and r = tau/dt is IF with reset to zero, and the file says so (dt in metadata)."""
    snn = snns["cnn"]
    g = nir.read(write_nir(snn, tmp_path / "t.nir", form="snntorch", dtype=np.float64))
    lifs = [n for n in g.nodes.values() if isinstance(n, nir.LIF)]
    assert lifs and not any(isinstance(n, nir.IF) for n in g.nodes.values())
    assert g.metadata["dt"] == pytest.approx(1e-4)
    for n in lifs:  # what snnTorch computes: beta = 1 - dt/tau, input gain r·dt/tau
        assert np.float32(1 - 1e-4 / n.tau.max()) == 1.0
        np.testing.assert_allclose(n.r * 1e-4 / n.tau, 1.0)
        assert np.unique(n.v_threshold).size == 1
    zero = snn.with_nodes([n.replace(reset="zero") if isinstance(n, IF) else n for n in snn.nodes])
    a = simulate(zero, data["x"], 16, dtype=np.float64).predictions
    b = simulate(from_nir(g), data["x"], 16, dtype=np.float64).predictions
    assert np.mean(np.argmax(next(iter(b.values())), -1) == np.argmax(
        next(iter(a.values())), -1)) > 0.99  # a leak of 1e-8 per step may flip a tie


def test_consumer_forms_refuse_what_the_consumer_would_run_wrongly(
        snns: dict[str, Graph]) -> None:
    for form in ("spyx", "sinabs"):
        problems = check_nir(snns["resnet"], form=form)
        assert problems and all(f"--nir-for {form}" in p and "branches" in p for p in problems)
        assert check_nir(snns["cnn"], form=form) == []
    assert any("I / Threshold / Scale" in p
               for p in check_nir(snns["cnn"], reset="exact", form="norse"))
    with pytest.raises(BackendError, match="consumer form"):
        check_nir(snns["cnn"], form="lava")


def test_residual_add_is_fan_in_with_scaling(snns: dict[str, Graph]) -> None:
    g = to_nir(snns["resnet"])
    into = [b for a, b in g.edges]
    assert len(into) != len(set(into))  # some node has several inputs
    assert len(g.edges) == len(set(g.edges))
    assert any(k.endswith("_scale1") for k in g.nodes)


def test_backend_run_and_emit(snns: dict[str, Graph], tmp_path: Path,
                              data: dict[str, np.ndarray]) -> None:
    backend = get_backend("nir")
    assert backend.check(snns["mlp"]) == []
    (path,) = backend.emit(snns["mlp"], tmp_path)
    assert path.name == "network.nir"
    res = backend.run(snns["mlp"], data["x"], 8, artifact_dir=str(tmp_path))
    (pred,) = res.predictions.values()
    assert pred.shape == (8, len(data["x"]), 10)


def test_check_refuses_by_name(data: dict[str, np.ndarray]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gate = convert(ROOT / "models/digits_resnet.onnx", data["calib"]).snn
        half = convert(ROOT / "models/digits_mlp.onnx", data["calib"], Recipe(v0="half")).snn
    problems = get_backend("nir").check(gate)
    assert any("'/2/MaxPool'" in p and "--maxpool avg" in p for p in problems)
    assert any("v0" in p and "--v0 zero" in p for p in get_backend("nir").check(half))
    with pytest.raises(BackendError, match="MaxPool"):
        to_nir(gate)
    x = Input(name="x", inputs=(), shape=(1, 4, 4))
    pad = Pad(name="p", inputs=("x",), shape=(1, 6, 6), pads=(1, 1, 1, 1))
    flat = Input(name="y", inputs=(), shape=(3,))
    g = Graph((x, pad, flat, Readout(name="r", inputs=("y",), shape=(3,))), ("r",))
    assert any("'p'" in p for p in get_backend("nir").check(g))


def test_population_bias_folds_into_its_synapse(tmp_path: Path) -> None:
    x = Input(name="x", inputs=(), shape=(3,))
    d = Dense(name="d", inputs=("x",), shape=(2,), weight=np.array([[1.0, 0, 0], [0, 1, 0]]))
    p = IF(name="p", inputs=("d",), shape=(2,), threshold=np.array(0.5), out_scale=np.array(0.5),
           v0=np.zeros(()), bias=np.array([0.1, -0.2]))
    o = Dense(name="o", inputs=("p",), shape=(1,), weight=np.ones((1, 2)))
    g = Graph((x, d, p, o, Readout(name="r", inputs=("o",), shape=(1,))), ("r",))
    path = write_nir(g, tmp_path / "b.nir", reset="exact", dtype=np.float64)
    np.testing.assert_allclose(nir.read(path).nodes["n01_d"].bias, [0.1, -0.2])
    assert_structurally_equal(g, restore_ir(path), 1e-12)
    xs = np.random.default_rng(0).random((5, 3))
    a = simulate(g, xs, 20, dtype=np.float64).predictions["r"]
    b = simulate(from_nir(path), xs, 20, dtype=np.float64).predictions["output"]
    np.testing.assert_allclose(b, a, atol=1e-12)


def test_import_hand_built_graph_under_nir_semantics(tmp_path: Path) -> None:
    """Another tool's file: Linear -> IF (reset to v_reset) -> Affine -> LIF without leak
    (tau = r = inf would be NaN; a huge tau with r = tau is the usual encoding) -> Output."""
    w1 = np.array([[1.0, 0.5], [0.2, 0.3]], np.float32)
    nodes = {
        "in": nir.Input(np.array([2])),
        "lin": nir.Linear(weight=w1),
        "if": nir.IF(r=np.ones(2, np.float32), v_threshold=np.full(2, 1.0, np.float32),
                     v_reset=np.full(2, -0.25, np.float32)),
        "aff": nir.Affine(weight=np.eye(2, dtype=np.float32), bias=np.zeros(2, np.float32)),
        "lif": nir.LIF(tau=np.full(2, 1e9), r=np.full(2, 1e9), v_leak=np.zeros(2),
                       v_threshold=np.full(2, 0.5)),
        "out": nir.Output(np.array([2])),
    }
    edges = [("in", "lin"), ("lin", "if"), ("if", "aff"), ("aff", "lif"), ("lif", "out")]
    nir.write(tmp_path / "h.nir", nir.NIRGraph(nodes=nodes, edges=edges))
    g = from_nir(tmp_path / "h.nir")
    x = np.array([[0.7, 0.4]])
    res = simulate(g, x, 6, dtype=np.float64, record=["if", "lif"])
    # hand simulation: v += W x; spike if v > 1; v = -0.25 after a spike
    cur, v, s_if = w1.astype(np.float64) @ x[0], np.zeros(2), []
    for _ in range(6):
        v += cur
        s = v > 1.0
        v[s] = -0.25
        s_if.append(s)
    np.testing.assert_array_equal(res.recorded["if"][:, 0] > 0, np.array(s_if))
    lif_ref, u = [], np.zeros(2)
    for s in s_if:
        u += s.astype(float)
        f = u > 0.5
        u[f] = 0.0
        lif_ref.append(f)
    np.testing.assert_array_equal(res.recorded["lif"][:, 0] > 0, np.array(lif_ref))
    assert res.predictions["out"].shape == (6, 1, 2)


def test_import_refuses_what_has_no_form(tmp_path: Path) -> None:
    nodes = {"in": nir.Input(np.array([2])), "d": nir.Delay(delay=np.ones(2)),
             "li": nir.LI(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2)),
             "out": nir.Output(np.array([2]))}
    g = nir.NIRGraph(nodes=nodes, edges=[("in", "d"), ("d", "li"), ("li", "out")])
    with pytest.raises(BackendError, match="Delay node 'd'"):
        from_nir(g)
    with pytest.raises(BackendError, match="not written by onnx2snn"):
        restore_ir(g)


def test_concat_of_maps_splits_the_full_size_convolution(tmp_path: Path) -> None:
    """Concat -> flatten -> dense: one full-size Conv2d per concatenated map (no Flatten), whose
    outputs fan into the readout; the file computes what the graph does."""
    from onnx2snn.ir.nodes import Concat, Conv, Reshape

    rng = np.random.default_rng(0)
    conv = {"strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1), "groups": 1}
    pop = {"v0": np.zeros(()), "bias": None}
    g = Graph((Input(name="x", inputs=(), shape=(1, 4, 4)),
               Conv(name="a", inputs=("x",), shape=(2, 4, 4), weight=rng.normal(size=(2, 1, 3, 3)),
                    bias=None, **conv),
               IF(name="pa", inputs=("a",), shape=(2, 4, 4), threshold=np.array(0.5),
                  out_scale=np.array(0.5), **pop),
               Conv(name="b", inputs=("x",), shape=(3, 4, 4), weight=rng.normal(size=(3, 1, 3, 3)),
                    bias=None, **conv),
               IF(name="pb", inputs=("b",), shape=(3, 4, 4), threshold=np.array(0.7),
                  out_scale=np.array(0.7), **pop),
               Concat(name="c", inputs=("pa", "pb"), shape=(5, 4, 4), axis=0),
               Reshape(name="f", inputs=("c",), shape=(80,)),
               Dense(name="d", inputs=("f",), shape=(4,), weight=rng.normal(size=(4, 80)),
                     bias=rng.normal(size=4)),
               Readout(name="r", inputs=("d",), shape=(4,))), ("r",))
    path = write_nir(g, tmp_path / "c.nir", reset="exact", dtype=np.float64)
    parts = [n for k, n in nir.read(path).nodes.items() if "_part" in k]
    assert len(parts) == 2 and all(isinstance(n, nir.Conv2d) for n in parts)
    assert [n.weight.shape for n in parts] == [(4, 2, 4, 4), (4, 3, 4, 4)]
    xs = rng.random((6, 1, 4, 4))
    a = simulate(g, xs, 10, dtype=np.float64).predictions["r"]
    (b,) = simulate(from_nir(path), xs, 10, dtype=np.float64).predictions.values()
    np.testing.assert_allclose(b, a, atol=1e-12)
