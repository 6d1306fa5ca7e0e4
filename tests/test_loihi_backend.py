"""LoihiBackend: check / emit (graph, netx HDF5 or a note, manifest, resources) / run."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from onnx2snn.backends import get_backend
from onnx2snn.convert import Recipe, convert
from onnx2snn.ir import load_graph

MODELS = Path(__file__).resolve().parents[1] / "models"


def _snn(name: str, **recipe: object):
    cal = np.load(MODELS / "digits_calib.npz")["x"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(MODELS / f"digits_{name}.onnx", cal, Recipe(**recipe)).snn, cal  # type: ignore[arg-type]


def test_listing_and_getting_the_backend_does_not_import_lava() -> None:
    code = ("import sys; from onnx2snn.backends import get_backend; get_backend('loihi'); "
            "print(any(m == 'lava' or m.startswith('lava.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_check_names_the_max_pool_layer() -> None:
    snn, _ = _snn("resnet")
    problems = get_backend("loihi").check(snn)
    assert len(problems) == 1 and "/2/MaxPool" in problems[0] and "--maxpool avg" in problems[0]
    assert get_backend("loihi").check(snn, neuron="bogus")


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_emit_sequential_writes_netx(tmp_path, model: str) -> None:
    snn, cal = _snn(model)
    paths = get_backend("loihi").emit(snn, tmp_path, neuron="lif", calib_x=cal)
    names = {p.name for p in paths}
    assert {"loihi_network.snn", "loihi_netx.h5", "loihi_manifest.json",
            "loihi_resources.md"} <= names
    m = json.loads((tmp_path / "loihi_manifest.json").read_text())
    assert m["neuron"] == "lif" and m["deployable"] and m["latency_steps"] >= 3
    assert m["versions"]["lava-nc"] and m["resources"]["total"]["neurons"] > 0
    with h5py.File(tmp_path / "loihi_netx.h5") as f:
        assert f["layer/0/type"][()] == b"input"
        kinds = [f[f"layer/{i}/type"][()] for i in range(len(f["layer"]))]
        assert b"dense" in kinds
    assert load_graph(tmp_path / "loihi_network.snn").meta["loihi"]["neuron"] == "lif"


def test_emit_residual_explains_missing_netx(tmp_path) -> None:
    snn, cal = _snn("resnet", maxpool="avg")
    paths = get_backend("loihi").emit(snn, tmp_path, neuron="if-subtract", calib_x=cal)
    note = next(p for p in paths if p.name.endswith(".txt"))
    assert "netx" in note.read_text()
    m = json.loads((tmp_path / "loihi_manifest.json").read_text())
    assert m["deployable"] is False and "simulation only" in m["deployment_note"]


@pytest.mark.slow
def test_run_returns_a_simresult() -> None:
    snn, cal = _snn("mlp")
    x = np.load(MODELS / "digits_test.npz")["x"][:2]
    r = get_backend("loihi").run(snn, x, 8, neuron="sdnn", calib_x=cal)
    (pred,) = r.predictions.values()
    assert pred.shape == (8, 2, 10) and r.sops_per_sample() > 0 and r.firing_rate() > 0


@pytest.mark.parametrize("mode", ["sdnn", "lif"])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_netx_file_holds_what_netx_builds_our_network_from(tmp_path, model: str, mode: str) -> None:
    """netx (lava-dl 0.6) builds SDNN neurons with state_exp 6, vth = vThMant·2**6 and bias =
    bias·2**6 (loaded with spike_exp=0), CUBA neurons with du = iDecay − 1 and bias_exp 6, and
    takes Dense weights as integers at exponent 0. The quantized graph must be exactly that, so
    that the file and onnx2snn's own Lava network are the same network (`./dev netx-check` runs
    both; it needs lava-dl and torch, so it is not part of this suite)."""
    from onnx2snn.backends.loihi.artifacts import NETX_LOAD_ARGS
    from onnx2snn.ir.loihi import LoihiConv, LoihiDense, LoihiNeuron

    snn, cal = _snn(model)
    get_backend("loihi").emit(snn, tmp_path, neuron=mode, calib_x=cal)
    q = load_graph(tmp_path / "loihi_network.snn")
    m = json.loads((tmp_path / "loihi_manifest.json").read_text())
    assert m["netx"]["load_with"] == NETX_LOAD_ARGS == {"input_message_bits": 8, "spike_exp": 0}
    syn = [n for n in q.nodes if isinstance(n, (LoihiDense, LoihiConv))]
    pops = [n for n in q.nodes if isinstance(n, LoihiNeuron)]
    with h5py.File(tmp_path / "loihi_netx.h5") as f:
        blocks = [f[f"layer/{i}"] for i in range(len(f["layer"]))
                  if f[f"layer/{i}/type"][()] in (b"dense", b"conv")]
        assert len(blocks) == len(syn) == len(pops) + 1
        for b, s in zip(blocks, syn):
            want = s.weight_int() if isinstance(s, LoihiConv) else s.weight_mant
            np.testing.assert_array_equal(b["weight"][()], want)
            if isinstance(s, LoihiDense):
                assert s.weight_exp == 0 and np.abs(s.weight_mant).max() <= 127
        for b, p in zip(blocks, pops):
            neu = b["neuron"]
            assert p.bias_exp == 6 and not np.any(p.v0)
            bias = np.broadcast_to(p.bias_mant, p.shape)
            if bias.ndim == 3:
                bias = bias[:, 0, 0]
            np.testing.assert_array_equal(b["bias"][()], bias)
            if mode == "sdnn":
                assert neu["type"][()] == b"SDNN" and p.state_exp == 6
                assert neu["vThMant"][()] * 2**6 == p.vth
            else:
                assert neu["type"][()] == b"CUBA" and neu["vThMant"][()] == p.vth
                assert neu["iDecay"][()] - 1 == 4095 and neu["vDecay"][()] == 0
        assert "sigma_output" in blocks[-1]["neuron"]  # the readout: running sum of currents


def test_netx_refuses_a_start_potential(tmp_path) -> None:
    snn, cal = _snn("mlp", v0="half")
    paths = get_backend("loihi").emit(snn, tmp_path, neuron="lif", calib_x=cal)
    note = next(p for p in paths if p.name.endswith(".txt")).read_text()
    assert "v0" in note and "/2/Relu" in note
