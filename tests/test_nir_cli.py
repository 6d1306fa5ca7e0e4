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
