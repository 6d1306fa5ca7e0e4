"""``emit OUT/ --target nir`` takes --nir-reset and --nir-pool as convert does (read back with nir)."""

from __future__ import annotations

from pathlib import Path

import nir
import pytest
from click.testing import CliRunner

from onnx2snn.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("emit") / "cnn"  # the CNN has average pooling
    # NIR neurons have no initial state: a numpy conversion re-emitted to NIR must start at v0 = 0
    r = CliRunner().invoke(main, ["convert", str(ROOT / "models/digits_cnn.onnx"), "-q",
                                  "--v0", "zero",
                                  "--calib", str(ROOT / "models/digits_calib.npz"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


def emit_nir(converted: Path, out: Path, *extra: str) -> nir.NIRGraph:
    r = CliRunner().invoke(main, ["emit", str(converted), "--target", "nir", "-o", str(out),
                                  *extra])
    assert r.exit_code == 0, r.output
    return nir.read(out / "network.nir")


def kinds(g: nir.NIRGraph) -> set[type]:
    return {type(n) for n in g.nodes.values()}


def test_emit_nir_exact_reset_and_avg_pool(converted: Path, tmp_path: Path) -> None:
    g = emit_nir(converted, tmp_path / "exact", "--nir-reset", "exact", "--nir-pool", "avg")
    assert "exact" in g.metadata["nir_reset"] and g.metadata["reset"] == "subtract"
    assert nir.IF not in kinds(g)
    assert {nir.I, nir.Threshold, nir.Scale, nir.AvgPool2d} <= kinds(g)
    assert nir.SumPool2d not in kinds(g)
    # the reset loop: Threshold -> Scale(-θ) -> back into the integrator I
    loops = [(a, b) for a, b in g.edges
             if isinstance(g.nodes[a], nir.Scale) and isinstance(g.nodes[b], nir.I)]
    assert loops and all(any(isinstance(g.nodes[s], nir.Threshold) for s, d in g.edges if d == a)
                         for a, _ in loops)


def test_emit_nir_defaults_are_if_and_sum_pool(converted: Path, tmp_path: Path) -> None:
    g = emit_nir(converted, tmp_path / "default")
    assert nir.IF in kinds(g) and nir.SumPool2d in kinds(g)
    assert not {nir.Threshold, nir.AvgPool2d} & kinds(g)
