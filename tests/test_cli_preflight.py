"""The pre-flight check: a network a target cannot express is refused before calibration.

``convert`` and ``compare`` build the SNN graph each recipe would make from the first calibration
sample, without corrections (``onnx2snn.convert.preflight``), and run the target's own check
on it. The refusal must come before the long calibration and the recipe search (here: those are
patched to fail if called), with exit code 4, nothing written, and the message of the check
after calibration, which stays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnx2snn.backends import cannot_express, get_backend
from onnx2snn.cli.main import main
from onnx2snn.convert import Recipe, convert_ann
from onnx2snn.convert.auto import search_recipe
from onnx2snn.convert.preflight import expressible_recipes, outline_snns
from onnx2snn.convert.profiles import profile_for
from onnx2snn.errors import BackendError
from onnx2snn.frontend import onnx_to_ann

ROOT = Path(__file__).resolve().parents[1]
CALIB = ROOT / "models/digits_calib.npz"
TEST = ROOT / "models/digits_test.npz"


def two_pool_model(path: Path) -> Path:
    """(1, 8, 8) -> Conv-ReLU -> MaxPool ``pool1`` -> Conv-ReLU -> MaxPool ``pool2`` -> Gemm(10)."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.5, size=shape).astype(np.float32), name)

    inits = [init("w1", 4, 1, 3, 3), init("b1", 4), init("w2", 4, 4, 3, 3), init("b2", 4),
             init("fw", 10, 16), init("fb", 10)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Flatten", ["p2"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1)]
    info = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "two_pools", [info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [info("y", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8  # what the installed onnxruntime reads
    onnx.save(m, path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return two_pool_model(tmp_path_factory.mktemp("preflight") / "pools.onnx")


@pytest.fixture
def no_calibration(monkeypatch):
    """Make the full conversion (convert: search or single recipe; compare) fail if called."""
    def called(*args, **kwargs):
        raise AssertionError("the full conversion ran before the pre-flight check refused")
    monkeypatch.setattr("onnx2snn.cli.convert_cmd.search_recipe", called)
    monkeypatch.setattr("onnx2snn.cli.convert_cmd.convert_ann", called)
    monkeypatch.setattr("onnx2snn.compare.convert_ann", called)


def invoke(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args])


def check_after_calibration(model: Path, target: str, recipe: Recipe) -> str:
    """The message of the check after a full calibration (what convert said before)."""
    snn = convert_ann(onnx_to_ann(str(model)), np.load(CALIB)["x"][:64], recipe).snn
    return str(cannot_express(target, get_backend(target).check(snn)))


@pytest.mark.parametrize("target, recipe_args", [
    ("loihi", []), ("nir", []), ("loihi", ["--recipe", "target"]), ("nir", ["--recipe", "target"]),
    ("nir", ["--nir-reset", "exact"])])
def test_convert_refuses_max_pooling_before_calibration(
        tmp_path: Path, model: Path, no_calibration, target: str, recipe_args: list[str]) -> None:
    out = tmp_path / "out"
    r = invoke("convert", model, "--target", target, "--calib", CALIB, "-o", out, *recipe_args)
    assert r.exit_code == 4, r.output
    assert "Traceback" not in r.output and "calibrating" not in r.output
    assert r.stderr.startswith(f"onnx2snn: error: the {target} target cannot express this "
                               "network:\n  ")
    assert "'pool1'" in r.stderr and "'pool2'" in r.stderr  # every node at once
    assert "--maxpool avg" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("target", ["loihi", "nir"])
def test_the_refusal_says_what_the_check_after_calibration_says(
        tmp_path: Path, model: Path, no_calibration, target: str) -> None:
    r = invoke("convert", model, "--target", target, "--calib", CALIB, "-o", tmp_path / "o", "-q")
    assert r.exit_code == 4
    expected = check_after_calibration(model, target, Recipe())
    assert r.stderr == f"onnx2snn: error: {expected}\n"


def test_a_recipe_option_the_target_cannot_run_is_refused_before_calibration(
        tmp_path: Path, model: Path, no_calibration) -> None:
    r = invoke("convert", model, "--target", "nir", "--maxpool", "avg", "--v0", "half",
               "--calib", CALIB, "-o", tmp_path / "o", "-q")
    assert r.exit_code == 4, r.output
    assert "v0 != 0" in r.stderr and "--v0 zero" in r.stderr and "'relu1'" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("target", ["loihi", "nir"])
def test_an_expressible_network_still_converts(tmp_path: Path, model: Path, target: str) -> None:
    out = tmp_path / "out"
    r = invoke("convert", model, "--target", target, "--maxpool", "avg", "--calib", CALIB,
               "-o", out, "-q")
    assert r.exit_code == 0, r.output
    assert (out / "network.snn").is_file() and (out / "report.md").is_file()
    assert "recipe search" in (out / "report.md").read_text()
    assert "does not try" not in r.stderr


def test_compare_refuses_before_calibration_when_no_target_can_run(
        model: Path, no_calibration) -> None:
    r = invoke("compare", model, "--targets", "nir,loihi", "--calib", CALIB, "--data", TEST,
               "--limit", "4", "-q")
    assert r.exit_code == 4, r.output
    line = r.stderr.strip()
    assert line.startswith("onnx2snn: error: no target could run: the nir target cannot express "
                           "this network: ")
    assert "; the loihi target cannot express this network: " in line
    assert "'pool1'" in line and "'pool2'" in line and "--maxpool avg" in line


def test_compare_still_runs_the_targets_that_can(model: Path) -> None:
    r = invoke("compare", model, "--targets", "numpy,nir", "--calib", CALIB, "--data", TEST,
               "--limit", "4", "-T", "4", "-q")
    assert r.exit_code == 0, r.output
    assert "nir: the nir target cannot express this network: " in r.stdout


@pytest.mark.filterwarnings("ignore:MaxPool .* replaced by average pooling")
def test_the_outline_has_the_structure_of_the_full_conversion() -> None:
    """One sample, no corrections: the same nodes; every problem the targets' checks find in
    the outline they find after calibration too (the corrections can add value-dependent ones:
    a corrected bias NIR has no place for), and without corrections the very same."""
    calib = np.load(CALIB)["x"][:64]
    recipes = {"plain": Recipe(),
               "corrected": Recipe(v0="calibrated", bias_correction=True, correction_steps=4),
               "avg": Recipe(maxpool="avg", reset="zero", gain_calibration=True,
                             correction_steps=4)}
    for name in ("digits_resnet", "digits_resnet_prelu"):
        ann = onnx_to_ann(str(ROOT / f"models/{name}.onnx"))
        outlines = outline_snns(ann, calib, recipes)
        for label, recipe in recipes.items():
            full = convert_ann(ann, calib, recipe).snn
            outline = outlines[label]
            assert [(n.name, n.kind, n.inputs, n.shape) for n in outline.nodes] == \
                [(n.name, n.kind, n.inputs, n.shape) for n in full.nodes], (name, label)
            for target in ("loihi", "nir"):
                before = get_backend(target).check(outline)
                after = get_backend(target).check(full)
                assert set(before) <= set(after), (name, label, target)
                if label == "plain":
                    assert before == after, (name, target)


@pytest.mark.filterwarnings("ignore:MaxPool .* replaced by average pooling")
def test_the_search_tries_only_the_recipes_the_target_can_express(model: Path) -> None:
    ann = onnx_to_ann(str(model))
    calib = np.load(CALIB)["x"][:16]
    recipes = {"v0=0": Recipe(maxpool="avg"), "v0=θ/2": Recipe(maxpool="avg", v0="half")}
    nir = get_backend("nir")
    ok, refused = expressible_recipes(ann, calib, recipes, "nir", nir.check)
    assert list(ok) == ["v0=0"] and list(refused) == ["v0=θ/2"]
    assert any("--v0 zero" in p for p in refused["v0=θ/2"])
    _, search = search_recipe(ann, calib, profile_for("numpy"), Recipe(maxpool="avg"),
                              timesteps=4, candidates=ok)
    assert [t.label for t in search.trials] == ["v0=0"]
    with pytest.raises(BackendError, match="the nir target cannot express this network"):
        expressible_recipes(ann, calib, {"gate": Recipe()}, "nir", nir.check)
