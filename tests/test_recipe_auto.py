"""Per-target neuron profiles, gain calibration for reset-to-zero neurons, and --recipe auto."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnx2snn.ann_executor import run_ann
from onnx2snn.backends.numpy import simulate
from onnx2snn.cli.main import main
from onnx2snn.convert import Recipe, RecipeError, convert, convert_ann
from onnx2snn.convert.auto import candidate_recipes, search_recipe
from onnx2snn.convert.profiles import PROFILES, profile_for
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.ir.spiking import IF

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "models/digits_mlp.onnx"
CALIB = ROOT / "models/digits_calib.npz"


def calib() -> np.ndarray:
    return np.load(CALIB)["x"]


# -- profiles ------------------------------------------------------------------------------------
@pytest.mark.parametrize("target, neuron, nir_reset, nir_for, reset", [
    ("numpy", "sdnn", "zero", "generic", "subtract"),
    ("loihi", "if-subtract", "zero", "generic", "subtract"),
    ("loihi", "lif", "zero", "generic", "zero"), ("loihi", "sdnn", "zero", "generic", "graded"),
    ("nir", "sdnn", "zero", "generic", "zero"), ("nir", "sdnn", "exact", "generic", "subtract"),
    # a file for Sinabs declares nir 1.0.4's IF, which resets by subtraction
    ("nir", "sdnn", "zero", "sinabs", "subtract")])
def test_each_target_neuron_has_a_profile_whose_recipe_it_can_run(
        target: str, neuron: str, nir_reset: str, nir_for: str, reset: str) -> None:
    p = profile_for(target, neuron, nir_reset, nir_for)
    assert p.reset == reset
    assert p.check(p.recipe) == []
    if reset in ("subtract", "zero"):
        assert p.recipe.reset == reset
    for label, r in candidate_recipes(p, Recipe()).items():
        assert p.check(r) == [], label


def test_profile_check_names_the_mismatch() -> None:
    nir = PROFILES["nir-zero"]
    problems = nir.check(Recipe(v0="half"))
    assert any("--reset zero" in m for m in problems)
    assert any("--v0 zero" in m for m in problems)
    with pytest.raises(RecipeError, match="no neuron profile"):
        profile_for("loihi", "izhikevich")


def test_candidates_keep_the_options_that_are_not_searched() -> None:
    base = Recipe(maxpool="avg", use_ceiling=False)
    for r in candidate_recipes(PROFILES["numpy"], base, 16).values():
        assert r.maxpool == "avg" and not r.use_ceiling
        if r.bias_correction or r.v0 == "calibrated":
            assert r.correction_steps == 16


# -- gain calibration (reset to zero) -------------------------------------------------------------
def test_gain_calibration_brings_reset_to_zero_rates_to_the_ann() -> None:
    x = calib()[:128]
    plain = convert(MLP, x, Recipe(reset="zero", norm="max"))
    gained = convert(MLP, x, Recipe(reset="zero", norm="max", gain_calibration=True,
                                    correction_steps=32))
    pops = [n.name for n in plain.snn.nodes if isinstance(n, IF)]
    ann = run_ann(plain.ann, x, keep=pops)

    def mean_error(snn) -> float:
        rec = simulate(snn, x, 32, record=pops).recorded
        return float(np.mean([abs(rec[p].mean() - ann[p].mean()) / ann[p].mean() for p in pops]))

    before, after = mean_error(plain.snn), mean_error(gained.snn)
    assert after < before / 2, (before, after)
    # the threshold stays; what a spike is worth grows (never shrinks)
    for a, b in zip(plain.snn.nodes, gained.snn.nodes):
        if isinstance(a, IF):
            assert isinstance(b, IF)
            assert np.array_equal(a.threshold, b.threshold)
            assert np.all(np.asarray(b.out_scale) >= np.asarray(a.out_scale))
    assert all(gained.snn.meta["calibration"][p]["gain_mean"] >= 1.0 for p in pops)


# -- --recipe auto --------------------------------------------------------------------------------
def test_search_picks_the_best_candidate_at_t_and_rebuilds_on_all_data() -> None:
    x = calib()[:96]
    conv, search = search_recipe(onnx_to_ann(MLP), x, PROFILES["numpy"], Recipe(), timesteps=4)
    assert search.fit_samples + search.held_out_samples == 96
    assert search.held_out_samples == 24
    assert {t.label for t in search.trials} == set(candidate_recipes(PROFILES["numpy"],
                                                                     Recipe(), 4))
    best = max(t.agreement[4] for t in search.trials)
    chosen = next(t for t in search.trials if t.label == search.chosen)
    assert chosen.agreement[4] == best
    assert conv.snn.meta["recipe"] == chosen.recipe.to_dict()
    assert conv.snn.meta["recipe_search"]["chosen"] == search.chosen
    # the winner is rebuilt on all the calibration data, exactly as a plain conversion
    again = convert_ann(onnx_to_ann(MLP), x, chosen.recipe)
    for a, b in zip(conv.snn.nodes, again.snn.nodes):
        if isinstance(a, IF):
            assert np.array_equal(a.threshold, b.threshold)
    assert "| chosen |" in "\n".join(search.table())


def test_search_without_t_ranks_by_the_smallest_t_within_one_pp() -> None:
    _, search = search_recipe(onnx_to_ann(MLP), calib()[:64], PROFILES["nir-zero"], Recipe())
    assert search.grid == [1, 2, 4, 8, 16, 32, 64]
    firsts = [t.score[0] for t in search.trials]
    chosen = next(t for t in search.trials if t.label == search.chosen)
    assert chosen.score[0] == min(firsts)
    assert all(t.recipe.reset == "zero" and t.recipe.v0 == "zero" for t in search.trials)


def test_search_needs_some_samples_to_hold_out() -> None:
    with pytest.raises(RecipeError, match="at least 8"):
        search_recipe(onnx_to_ann(MLP), calib()[:5], PROFILES["numpy"], Recipe())


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_convert_searches_by_default_and_reports_the_table(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = invoke("convert", MLP, "--calib", CALIB, "-o", out, "-q", "-T", "8",
               "--calib-samples", "64")
    assert r.exit_code == 0, r.stderr
    assert "Recipe search (--recipe auto)" in r.stdout and "| chosen |" in r.stdout
    manifest = json.loads((out / "onnx2snn.json").read_text())
    assert manifest["neuron_profile"] == "numpy"
    search = manifest["recipe_search"]
    assert search["timesteps"] == 8 and search["chosen"]
    chosen = next(t for t in search["trials"] if t["label"] == search["chosen"])
    assert manifest["recipe"] == chosen["recipe"]
    assert "Recipe search" in (out / "report.md").read_text()


def test_default_search_is_skipped_when_too_costly_but_runs_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnx2snn.convert import auto
    from onnx2snn.convert.auto import search_cost

    ann = onnx_to_ann(MLP)
    cost = search_cost(ann, 64, PROFILES["numpy"], Recipe(), 8)
    # every candidate simulates 16 held-out samples for 8 steps: the cost is at least that
    assert cost >= len(candidate_recipes(PROFILES["numpy"], Recipe(), 8)) * 16 * 8 * ann.macs()
    monkeypatch.setattr(auto, "DEFAULT_SEARCH_BUDGET_MACS", cost / 2)
    out = tmp_path / "out"
    r = invoke("convert", MLP, "--calib", CALIB, "-o", out, "-q", "-T", "8",
               "--calib-samples", "64")
    assert r.exit_code == 0, r.stderr
    assert "not searching recipes" in r.stderr and "--recipe auto" in r.stderr
    manifest = json.loads((out / "onnx2snn.json").read_text())
    assert manifest["recipe_search"] is None and manifest["recipe_search_skipped"]
    assert manifest["recipe"] == dataclasses.replace(PROFILES["numpy"].recipe,
                                                     correction_steps=8).to_dict()
    assert "not searching recipes" in (out / "report.md").read_text()
    # asked for explicitly, the search runs whatever it costs
    r = invoke("convert", MLP, "--calib", CALIB, "-o", tmp_path / "asked", "-q", "-T", "8",
               "--calib-samples", "64", "--recipe", "auto")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "asked" / "onnx2snn.json").read_text())["recipe_search"]


def test_default_search_is_skipped_with_too_few_calibration_samples(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = invoke("convert", MLP, "--calib", CALIB, "-o", out, "-q", "--calib-samples", "4")
    assert r.exit_code == 0, r.stderr
    assert "too few to hold some out" in r.stderr
    assert json.loads((out / "onnx2snn.json").read_text())["recipe_search"] is None
    r = invoke("convert", MLP, "--calib", CALIB, "-o", tmp_path / "asked", "-q",
               "--calib-samples", "4", "--recipe", "auto")
    assert r.exit_code == 2 and "at least 8 calibration samples" in r.stderr


def test_convert_with_recipe_options_uses_them_without_a_search(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = invoke("convert", MLP, "--calib", CALIB, "-o", out, "-q", "--norm", "max")
    assert r.exit_code == 0, r.stderr
    manifest = json.loads((out / "onnx2snn.json").read_text())
    assert manifest["recipe_search"] is None
    # the other knobs come from the target neuron's recipe
    assert manifest["recipe"] == dict(PROFILES["numpy"].recipe.to_dict(), norm="max")
    r = invoke("convert", MLP, "--calib", CALIB, "-o", tmp_path / "x", "-q", "--recipe", "auto",
               "--v0", "half")
    assert r.exit_code == 2 and "--v0" in r.stderr and not (tmp_path / "x").exists()


def test_convert_warns_when_the_recipe_does_not_suit_the_target_neuron(tmp_path: Path) -> None:
    r = invoke("convert", MLP, "--calib", CALIB, "-o", tmp_path / "o", "-q", "--target", "nir",
               "--reset", "subtract")
    assert r.exit_code == 0, r.stderr
    assert "warning" in r.stderr and "--reset zero" in r.stderr


# -- the reset-to-zero goal (issue 11): at most 2 pp lost at T = 64 -------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_cnn", "digits_dwsep"])
def test_reset_to_zero_recipe_loses_at_most_2pp_at_t64(name: str) -> None:
    from onnx2snn.evaluate import accuracy
    from onnx2snn.oracle import onnxruntime_outputs

    test = np.load(ROOT / "models/digits_test.npz")
    x, y = test["x"], test["y"]
    model = ROOT / f"models/{name}.onnx"
    ann = accuracy(onnxruntime_outputs(model, x), y)
    assert ann is not None
    accs = {}
    for label, recipe in (("plain", Recipe(reset="zero")),
                          ("profile", PROFILES["nir-zero"].recipe)):
        snn = convert(model, calib(), recipe).snn
        assert all(n.reset == "zero" for n in snn.nodes if isinstance(n, IF))
        (pred,) = simulate(snn, x, 64).predictions.values()
        accs[label] = accuracy(pred[63], y)
    assert accs["profile"] >= ann - 0.02, accs
    assert accs["plain"] < accs["profile"]  # the recipe, not the model, makes the difference
