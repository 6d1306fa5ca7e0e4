"""``onnx2snn convert`` and ``onnx2snn evaluate`` through click's CliRunner, in isolated folders.

The digits MLP (fast to simulate) is converted once per module; each test works in its own
isolated filesystem. Bad inputs must give exit code 3, one ``onnx2snn: error:`` line on stderr and
no traceback, and write nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnx2snn.artifacts import read_output_folder
from onnx2snn.backends.numpy import NumpyBackend
from onnx2snn.cli.main import main
from onnx2snn.errors import BackendError
from onnx2snn.ir import IF, load_graph
from onnx2snn.oracle import onnxruntime_outputs

MODELS = Path(__file__).resolve().parents[1] / "models"
MLP = MODELS / "digits_mlp.onnx"
CALIB = MODELS / "digits_calib.npz"
TEST = MODELS / "digits_test.npz"
FILES = {"network.snn", "source.onnx", "report.md", "onnx2snn.json"}


def invoke(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(folder.rglob("*"))}


def assert_one_error_line(result, code: int = 3) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx2snn: error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "mlp"
    result = invoke("convert", MLP, "--calib", CALIB, "-o", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch) -> Path:
    """Run in an empty folder of our own (the CLI's relative paths land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    np.savez(d / "wrong_shape.npz", x=np.zeros((4, 5)))
    np.savez(d / "no_x.npz", inputs=np.zeros((4, 64)))
    (d / "not_npz.npz").write_text("this is text\n")
    np.savez(d / "nan.npz", x=np.full((4, 1, 8, 8), np.nan))
    return d


BAD = ["missing.npz", "wrong_shape.npz", "no_x.npz", "not_npz.npz", "nan.npz"]


# -- convert -------------------------------------------------------------------------------------
def test_convert_writes_the_output_folder(converted: Path) -> None:
    assert {p.name for p in converted.iterdir()} == FILES
    manifest = json.loads((converted / "onnx2snn.json").read_text())
    assert manifest["target"] == "numpy" and manifest["graph"] == "network.snn"
    assert manifest["source_sha256"] == hashlib.sha256(MLP.read_bytes()).hexdigest()
    assert manifest["recipe"]["norm"] == "percentile" and manifest["calibration_samples"] == 256
    assert set(manifest["files"]) >= {"network.snn", "source.onnx", "report.md"}
    assert (converted / "source.onnx").read_bytes() == MLP.read_bytes()
    graph = load_graph(converted / "network.snn")
    assert graph.meta["stage"] == "snn" and len([n for n in graph if isinstance(n, IF)]) == 2
    report = (converted / "report.md").read_text()
    assert "digits_mlp.onnx" in report and "p99.9" in report
    # an output folder is an ordinary folder: umask applies (mkdtemp would make it 0700)
    mask = os.umask(0)
    os.umask(mask)
    assert (converted.stat().st_mode & 0o777) == 0o777 & ~mask
    assert ((converted / "network.snn").stat().st_mode & 0o777) == 0o666 & ~mask


def test_convert_recipe_options_reach_the_network(isolated: Path) -> None:
    result = invoke("convert", MLP, "--calib", CALIB, "-o", "out", "-q", "--norm", "max",
                    "--reset", "zero", "--v0", "half", "--calib-samples", "64")
    assert result.exit_code == 0, result.stderr
    assert "wrote" in result.stdout and "network.snn" in result.stdout
    graph = load_graph("out/network.snn")
    pops = [n for n in graph if isinstance(n, IF)]
    assert all(p.reset == "zero" and np.allclose(p.v0, p.threshold / 2) for p in pops)
    assert graph.meta["recipe"]["norm"] == "max"
    assert json.loads(Path("out/onnx2snn.json").read_text())["calibration_samples"] == 64
    result = invoke("convert", MLP, "--calib", CALIB, "-o", "x", "--norm", "l2")
    assert result.exit_code == 2 and not Path("x").exists()


def test_convert_replaces_an_earlier_output(isolated: Path, converted: Path) -> None:
    shutil.copytree(converted, "out")
    Path("out/stale.txt").write_text("from an earlier run")
    result = invoke("convert", MLP, "--calib", CALIB, "-o", "out", "-q", "--v0", "half")
    assert result.exit_code == 0, result.stderr
    assert {p.name for p in Path("out").iterdir()} == FILES
    assert load_graph("out/network.snn").meta["recipe"]["v0"] == "half"
    assert sorted(os.listdir(".")) == ["out"]  # no temporary folders left beside it


def test_convert_refuses_a_foreign_folder(isolated: Path) -> None:
    Path("mine").mkdir()
    Path("mine/notes.txt").write_text("precious")
    before = snapshot(Path("mine"))
    line = assert_one_error_line(invoke("convert", MLP, "--calib", CALIB, "-o", "mine", "-q"))
    assert "not an onnx2snn output folder" in line
    assert snapshot(Path("mine")) == before
    assert sorted(os.listdir(".")) == ["mine"]


def test_convert_into_an_empty_folder(isolated: Path) -> None:
    Path("empty").mkdir()
    assert invoke("convert", MLP, "--calib", CALIB, "-o", "empty", "-q").exit_code == 0
    assert {p.name for p in Path("empty").iterdir()} == FILES
    # but not into the current folder, which the final rename would pull away
    Path("here").mkdir()
    os.chdir("here")
    line = assert_one_error_line(invoke("convert", MLP, "--calib", CALIB, "-o", ".", "-q"))
    assert "current folder" in line and os.listdir(".") == []


@pytest.mark.parametrize("name", BAD)
def test_convert_bad_calibration_data(isolated: Path, bad_files: Path, name: str) -> None:
    line = assert_one_error_line(
        invoke("convert", MLP, "--calib", bad_files / name, "-o", "out", "-q"))
    assert name in line
    assert os.listdir(".") == []  # neither OUT nor a temporary folder


def test_a_failure_while_writing_leaves_nothing(isolated: Path, converted: Path,
                                                monkeypatch) -> None:
    def failing_emit(self, graph, out_dir, **options):
        (out_dir / "half_written.bin").write_bytes(b"\0" * 100)
        raise BackendError("disk full (simulated)")

    monkeypatch.setattr(NumpyBackend, "emit", failing_emit)
    line = assert_one_error_line(invoke("convert", MLP, "--calib", CALIB, "-o", "out", "-q"),
                                 code=4)
    assert "disk full" in line
    assert os.listdir(".") == []
    # an earlier output in OUT survives a failed conversion untouched
    shutil.copytree(converted, "out")
    before = snapshot(Path("out"))
    assert_one_error_line(invoke("convert", MLP, "--calib", CALIB, "-o", "out", "-q"), code=4)
    assert snapshot(Path("out")) == before
    assert os.listdir(".") == ["out"]


def test_convert_missing_model(isolated: Path) -> None:
    line = assert_one_error_line(invoke("convert", "nope.onnx", "--calib", CALIB, "-o", "out"))
    assert "nope.onnx" in line and os.listdir(".") == []


# -- evaluate ------------------------------------------------------------------------------------
def test_evaluate_prints_the_table(converted: Path) -> None:
    result = invoke("evaluate", converted, "--data", TEST, "-T", "1,4,16", "-q")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "ANN accuracy (onnxruntime): 97.22%" in out
    for head in ("accuracy", "agrees with ANN", "firing rate", "SOPs/sample"):
        assert head in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:2] in ("1 ", "4 ", "16")]
    assert [r[0] for r in rows] == ["1", "4", "16"]
    assert rows[-1][1].endswith("%")
    assert "smallest T (from this one on) within 0.5 pp: " in out


def test_evaluate_json(converted: Path) -> None:
    result = invoke("evaluate", converted, "--data", TEST, "-T", "16,2,8", "--json", "--limit",
                    "100")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)  # nothing but the JSON object on stdout
    x = np.load(TEST)["x"][:100]
    y = np.load(TEST)["y"][:100]
    ann = onnxruntime_outputs(MLP, x)
    assert doc["ann_accuracy"] == pytest.approx(float((ann.argmax(1) == y).mean()))
    assert doc["ann_reference"] == "onnxruntime"
    assert doc["samples"] == 100
    assert [r["t"] for r in doc["results"]] == [2, 8, 16]
    for r in doc["results"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["sops"] >= 0 and 0 <= r["firing_rate"] <= 1
    assert doc["results"][-1]["accuracy"] > 0.9
    # the smallest T within 0.5 / 1 pp of the ANN, read from the same rows
    accs = {r["t"]: r["accuracy"] for r in doc["results"]}
    for key, tol in (("0.5", 0.005), ("1", 0.01)):
        t = doc["smallest_t_within_pp"][key]
        ok = [u for u in accs if all(accs[v] >= doc["ann_accuracy"] - tol - 1e-12
                                     for v in accs if v >= u)]
        assert t == (min(ok) if ok else None)
    assert set(doc["layers"]) == {n.name for n in read_output_folder(converted).graph
                                  if isinstance(n, IF)}


def test_evaluate_json_matches_the_library(converted: Path) -> None:
    from onnx2snn.backends.numpy import simulate
    from onnx2snn.evaluate import accuracy

    result = invoke("evaluate", converted, "--data", TEST, "-T", "8", "--json", "--limit", "50",
                    "--schedule", "loihi", "--batch-size", "7")
    assert result.exit_code == 0, result.stderr
    data = np.load(TEST)
    x, y = data["x"][:50].reshape(50, 1, 8, 8), data["y"][:50]
    graph = load_graph(converted / "network.snn")
    sim = simulate(graph, x, 8, schedule="loihi")
    (pred,) = sim.predictions.values()
    ann = onnxruntime_outputs(MLP, x)
    (row,) = json.loads(result.stdout)["results"]
    assert row["accuracy"] == pytest.approx(accuracy(pred[7], y))
    assert row["agreement"] == pytest.approx(float((pred[7].argmax(1) == ann.argmax(1)).mean()))
    assert row["mean_abs_error"] == pytest.approx(float(np.abs(pred[7] - ann).mean()), rel=1e-6)
    assert row["firing_rate"] == pytest.approx(sim.firing_rate())
    assert row["sops"] == pytest.approx(sim.sops_per_sample())


def test_evaluate_plot_writes_a_png(isolated: Path, converted: Path) -> None:
    result = invoke("evaluate", converted, "--data", TEST, "-T", "1,2,4", "--limit", "40",
                    "-q", "--plot", "acc.png")
    assert result.exit_code == 0, result.stderr
    assert Path("acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_poisson_is_reproducible(converted: Path) -> None:
    def run(seed: int) -> list:
        r = invoke("evaluate", converted, "--data", TEST, "-T", "4,8", "--json", "--limit", "60",
                   "--encoder", "poisson", "--seed", str(seed))
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)["results"]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_evaluate_poisson_warns_about_values_it_clips(tmp_path: Path, converted: Path) -> None:
    x = np.load(TEST)["x"][:20]
    np.savez(tmp_path / "centred.npz", x=x - 0.5, y=np.load(TEST)["y"][:20])
    r = invoke("evaluate", converted, "--data", tmp_path / "centred.npz", "-T", "4", "--quiet",
               "--encoder", "poisson")
    assert r.exit_code == 0, r.stderr
    assert "outside [0, 1] and are clipped" in r.stderr
    r = invoke("evaluate", converted, "--data", TEST, "-T", "4", "--quiet", "--limit", "20",
               "--encoder", "poisson")
    assert r.exit_code == 0 and "clipped" not in r.stderr


@pytest.mark.parametrize("name", BAD)
def test_evaluate_bad_data(isolated: Path, converted: Path, bad_files: Path, name: str) -> None:
    line = assert_one_error_line(invoke("evaluate", converted, "--data", bad_files / name,
                                        "--plot", "acc.png", "--json"))
    assert name in line
    assert os.listdir(".") == []


def test_evaluate_without_a_converted_folder(isolated: Path) -> None:
    Path("empty").mkdir()
    line = assert_one_error_line(invoke("evaluate", "empty", "--data", TEST))
    assert "onnx2snn convert" in line


def test_evaluate_a_bare_graph_file_has_no_ann_line(converted: Path) -> None:
    result = invoke("evaluate", converted / "network.snn", "--data", TEST, "-T", "4", "--json",
                    "--limit", "20")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ann_accuracy"] is None and doc["results"][0]["accuracy"] is not None
    assert any("no ANN reference" in n for n in doc["notes"])


@pytest.mark.parametrize("bad", ["0,4", "a,b", ""])
def test_evaluate_bad_timesteps_is_a_usage_error(converted: Path, bad: str) -> None:
    result = invoke("evaluate", converted, "--data", TEST, "-T", bad)
    assert result.exit_code == 2 and "timesteps" in result.stderr.lower()


@pytest.mark.parametrize("command, words", [
    ("convert", ["--calib", "--norm", "--percentile", "--reset", "--v0", "--maxpool",
                 "--bias-correction", "--calib-samples", "--batch-size"]),
    ("evaluate", ["--data", "--timesteps", "--json", "--plot", "--schedule", "--encoder"]),
])
def test_help(command: str, words: list[str]) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0 and result.stdout.startswith("Usage:")
    for w in words:
        assert w in result.stdout


def test_evaluate_a_two_output_model_reads_the_first(isolated: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(2, 6)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w1"], ["y1"], transB=1),
             helper.make_node("Gemm", ["r", "w2"], ["y2"], transB=1)]
    info = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "two", [info("x", TensorProto.FLOAT, ["N", 3])],
                              [info("y1", TensorProto.FLOAT, ["N", 2]),
                               info("y2", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    Path("two.onnx").write_bytes(model.SerializeToString())
    x = rng.uniform(size=(30, 3)).astype(np.float32)
    np.savez("d.npz", x=x, y=onnxruntime_outputs("two.onnx", x).argmax(1))
    assert invoke("convert", "two.onnx", "--calib", "d.npz", "-o", "out", "-q").exit_code == 0
    result = invoke("evaluate", "out", "--data", "d.npz", "-T", "256", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ann_accuracy"] == 1.0 and doc["results"][0]["accuracy"] >= 0.9
    assert any("2 outputs" in n for n in doc["notes"])


def test_evaluate_compares_logits_when_the_final_softmax_was_dropped(isolated: Path) -> None:
    """|out - ANN| is taken against the softmax's input (the logits the readout estimates)."""
    import onnx

    model = onnx.load(MLP)
    logits = model.graph.output[0].name
    model.graph.node.append(onnx.helper.make_node("Softmax", [logits], ["probs"], axis=1))
    model.graph.output[0].name = "probs"
    onnx.save(model, "soft.onnx")
    result = invoke("convert", "soft.onnx", "--calib", CALIB, "-o", "out", "--quiet")
    assert result.exit_code == 0, result.stderr
    result = invoke("evaluate", "out", "--data", TEST, "-T", "32", "--json", "--limit", "60")
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)["results"]
    x = np.load(TEST)["x"][:60].reshape(60, 1, 8, 8)
    from onnx2snn.backends.numpy import simulate

    (pred,) = simulate(load_graph(Path("out") / "network.snn"), x, 32).predictions.values()
    pred = pred[31]
    z = onnxruntime_outputs(MLP, x)  # the logits of the model without the softmax
    assert row["mean_abs_error"] == pytest.approx(float(np.abs(pred - z).mean()), rel=1e-5)
    probs = onnxruntime_outputs("soft.onnx", x)
    assert abs(row["mean_abs_error"] - float(np.abs(pred - probs).mean())) > 1e-3
