"""``onnx2snn compare`` on the bundled MLP and CNN (what CI runs), --json, and exit code 5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnx2snn.backends.nir.nodes import NirNeuron
from onnx2snn.backends.numpy.simulator import POPULATION_RUNNERS
from onnx2snn.cli.main import main
from onnx2snn.compare import Comparison, TargetResult
from onnx2snn.errors import CheckFailedError

ROOT = Path(__file__).resolve().parents[1]


def run_compare(model: str, *extra: str) -> object:
    args = ["compare", str(ROOT / f"models/digits_{model}.onnx"), "--targets", "numpy,nir",
            "--calib", str(ROOT / "models/digits_calib.npz"),
            "--data", str(ROOT / "models/digits_test.npz"), "-T", "32", *extra]
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_compare_exact_nir_matches_reference_spike_for_spike(model: str) -> None:
    r = run_compare(model, "--nir-reset", "exact", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["failures"] == []
    ref, nir_row = d["targets"]
    assert ref["target"] == "numpy" and nir_row["target"] == "nir"
    assert nir_row["spike_mismatches"] == 0 and nir_row["spikes_compared"] > 0
    assert nir_row["accuracy"] == ref["accuracy"] == d["reference_accuracy"]
    assert ref["agreement_with_ann"] > 0.95


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_compare_default_nir_reports_accuracy_delta(model: str) -> None:
    r = run_compare(model)
    assert r.exit_code == 0, r.output
    assert "differs by design" in r.stdout and "Δ vs reference" in r.stdout


def test_compare_exits_5_when_targets_that_must_agree_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    real = POPULATION_RUNNERS[NirNeuron]

    def broken(node, current, timesteps, strict, dtype):  # type: ignore[no-untyped-def]
        out, counts = real(node, current, timesteps, strict, dtype)
        out[-1] = 1.0 - out[-1]  # flip every spike of the last step
        return out, counts

    monkeypatch.setitem(POPULATION_RUNNERS, NirNeuron, broken)
    r = run_compare("mlp", "--nir-reset", "exact", "--limit", "20")
    assert r.exit_code == 5, r.output
    assert "must agree" in r.stderr and "spikes differ" in r.stderr


def test_compare_bad_target_is_usage_error() -> None:
    r = run_compare("mlp", "--targets", "numpy,tpu")
    assert r.exit_code == 2


def test_failures_raise_check_failed() -> None:
    c = Comparison("m", 1, 1, None, None, [TargetResult("nir", "failed", "x", note="1 of 2")])
    with pytest.raises(CheckFailedError) as e:
        c.raise_on_failure()
    assert e.value.exit_code == 5
    assert np.isscalar(len(c.failures))
