"""convert --target nir (--nir-reset, --nir-pool), evaluate OUT/ --backend nir and evaluate MODEL.nir."""

from __future__ import annotations

import json
from pathlib import Path

import nir
from click.testing import CliRunner

from onnx2snn.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_convert_to_nir_then_evaluate_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["convert", str(ROOT / "models/digits_cnn.onnx"), "--target", "nir",
                                  "--nir-reset", "exact", "--nir-pool", "avg", "-q",
                                  "--calib", str(ROOT / "models/digits_calib.npz"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    g = nir.read(out / "network.nir")
    assert g.metadata["reset"] == "subtract" and "exact" in g.metadata["nir_reset"]
    assert any(isinstance(n, nir.AvgPool2d) for n in g.nodes.values())
    accs = []
    for target in (str(out), str(out / "network.nir")):
        r = CliRunner().invoke(main, ["evaluate", target, "--backend", "nir", "-T", "8,32", "-q",
                                      "--json", "--limit", "100",
                                      "--data", str(ROOT / "models/digits_test.npz")])
        assert r.exit_code == 0, r.output
        accs.append([row["accuracy"] for row in json.loads(r.stdout)["results"]])
    assert accs[0] == accs[1]


def test_convert_to_nir_refuses_max_pool_gate(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["convert", str(ROOT / "models/digits_resnet.onnx"), "--target",
                                  "nir", "-q", "--calib", str(ROOT / "models/digits_calib.npz"),
                                  "-o", str(tmp_path / "o")])
    assert r.exit_code == 4
    assert "/2/MaxPool" in r.stderr and "--maxpool avg" in r.stderr
    assert not (tmp_path / "o").exists()


def test_nir_for_sinabs_writes_subtract_and_spyx_refuses_branches(tmp_path: Path) -> None:
    """--nir-for sinabs declares nir 1.0.4's IF (reset by subtraction), which evaluate honours:
    the file then scores like the reference; --nir-for spyx refuses a residual net by name."""
    calib = ["--calib", str(ROOT / "models/digits_calib.npz")]
    out = tmp_path / "s"
    r = CliRunner().invoke(main, ["convert", str(ROOT / "models/digits_mlp.onnx"), "--target",
                                  "nir", "--nir-for", "sinabs", "-q", *calib, "-o", str(out)])
    assert r.exit_code == 0, r.output
    g = nir.read(out / "network.nir")
    assert g.metadata["nir_for"] == "sinabs" and g.metadata["if_reset"] == "subtract"
    accs = {}
    for backend, target in (("nir", str(out / "network.nir")), ("numpy", str(out))):
        r = CliRunner().invoke(main, ["evaluate", target, "--backend", backend, "-T", "32", "-q",
                                      "--json", "--limit", "60",
                                      "--data", str(ROOT / "models/digits_test.npz")])
        assert r.exit_code == 0, r.output
        accs[backend] = [row["accuracy"] for row in json.loads(r.stdout)["results"]]
    assert accs["nir"] == accs["numpy"]
    r = CliRunner().invoke(main, ["convert", str(ROOT / "models/digits_resnet_avg.onnx"),
                                  "--target", "nir", "--nir-for", "spyx", "-q", *calib,
                                  "-o", str(tmp_path / "x")])
    assert r.exit_code == 4
    assert "--nir-for spyx" in r.stderr and "first out-edge" in r.stderr
    assert not (tmp_path / "x").exists()
