"""``onnx2snn inspect``: the table, the summary, --json, --drop, exit code 4 with the partial graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnx2snn import __version__
from onnx2snn.cli.main import main
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.inspect import inspect_model

MODELS = Path(__file__).resolve().parents[1] / "models"
DIGITS = sorted(MODELS.glob("digits_*.onnx"))


def make_model(path: Path, refused: bool = False, softmax: bool = False,
               lrn: bool = False) -> Path:
    """Conv -> Relu -> [Sigmoid, Tanh] -> [LRN] -> GlobalAveragePool -> Flatten -> Gemm -> [Softmax]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "b"),
             numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "fw")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu")]
    last = "r"
    if refused:
        nodes += [helper.make_node("Sigmoid", [last], ["s"], name="sig"),
                  helper.make_node("Tanh", ["s"], ["t"], name="")]
        last = "t"
    if lrn:
        nodes.append(helper.make_node("LRN", [last], ["l"], name="lrn", size=3))
        last = "l"
    nodes += [helper.make_node("GlobalAveragePool", [last], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flat"),
              helper.make_node("Gemm", ["f", "fw"], ["y"], name="fc", transB=1)]
    out = "y"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["y"], ["p"], name="prob", axis=1))
        out = "p"
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["N", 2, 6, 6])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 3])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def invoke(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args])


# -- commands, help, version ---------------------------------------------------------------------
def test_version() -> None:
    for flag in ("--version", "-V"):
        result = invoke(flag)
        assert result.exit_code == 0 and __version__ in result.stdout


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["inspect", "--help"]])
def test_help(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 0 and "Usage:" in result.stdout


def test_every_command_has_help() -> None:
    for name, command in main.commands.items():
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert command.help, f"command {name} has no help text"


def test_usage_error_is_exit_2() -> None:
    assert invoke("inspect").exit_code == 2
    assert invoke("inspect", "x.onnx", "--no-such-option").exit_code == 2


# -- a model that converts -----------------------------------------------------------------------
@pytest.mark.parametrize("model", DIGITS, ids=[p.stem for p in DIGITS])
def test_inspect_digits_models(model: Path) -> None:
    result = invoke("inspect", model)
    assert result.exit_code == 0, result.output
    graph = onnx_to_ann(model)
    out = result.stdout
    for node in graph:
        assert node.name in out
    assert f"{graph.macs():,} MACs per sample" in out
    assert f"{graph.n_params():,} parameters" in out
    assert "ONNX opset: 17" in out and "converts: yes" in out
    assert result.stderr == ""


def test_inspect_table_columns(tmp_path: Path) -> None:
    result = invoke("inspect", make_model(tmp_path / "m.onnx"))
    assert result.exit_code == 0
    header = next(line for line in result.stdout.splitlines() if "output shape" in line)
    for col in ("name", "op", "output shape", "params", "MACs", "details", "from ONNX"):
        assert col in header
    conv = next(line for line in result.stdout.splitlines() if " conv " in line)
    # 4 x 2 x 3 x 3 weights + 4 biases; 4*6*6 outputs x 18 MACs each
    assert "(4, 6, 6)" in conv and " 76 " in conv and "2,592" in conv and "k3x3 p1,1,1,1" in conv


def test_json_matches_graph(tmp_path: Path) -> None:
    path = make_model(tmp_path / "m.onnx", softmax=True)
    result = invoke("inspect", path, "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    graph = onnx_to_ann(path)
    assert doc["converts"] is True and doc["exit_code"] == 0
    assert [n["name"] for n in doc["graph"]["nodes"]] == [n.name for n in graph]
    assert doc["summary"]["macs"] == graph.macs() and doc["summary"]["params"] == graph.n_params()
    assert doc["summary"]["nodes"] == len(graph)
    assert doc["summary"]["opset"] == 13
    assert doc["summary"]["dropped"] == ["Softmax prob (final; argmax-invariant)"]
    assert doc["model"]["onnx_ops"]["Conv"] == 1
    assert doc["graph"]["inputs"] == {"x": [2, 6, 6]}
    assert doc["unsupported"] == []
    fc = doc["graph"]["nodes"][-1]
    assert fc["kind"] == "dense" and fc["origin"] == ["fc"] and fc["shape"] == [3]


def test_softmax_dropped_in_text_summary(tmp_path: Path) -> None:
    result = invoke("inspect", make_model(tmp_path / "m.onnx", softmax=True))
    assert "dropped terminal softmax: Softmax prob (final; argmax-invariant)" in result.stdout


# -- a model that does not convert ---------------------------------------------------------------
def test_unsupported_exit_4_partial_graph_and_complete_list(tmp_path: Path) -> None:
    result = invoke("inspect", make_model(tmp_path / "m.onnx", refused=True, lrn=True))
    assert result.exit_code == 4
    out = result.stdout
    assert "partial ANN graph" in out
    assert " conv " in out and " relu " in out          # what converted is shown
    assert "converts: no, 3 unsupported nodes:" in out
    # sorted by op, with node names (generated for the unnamed Tanh) and hints
    listed = [line.split(" (")[0].strip() for line in out.splitlines()
              if line.startswith("    ") and not line.strip().startswith("hint")
              and "(" in line and ":" in line and not line.startswith("      ")]
    assert listed == ["LRN", "Sigmoid", "Tanh"]
    assert "LRN (1): lrn" in out and "Sigmoid (1): sig" in out and "Tanh (1): Tanh_3" in out
    assert out.count("hint:") == 3 and "retrain with ReLU" in out
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onnx2snn: error:") and "LRN, Sigmoid, Tanh" in err[0]
    assert "Traceback" not in result.output


def test_unsupported_json(tmp_path: Path) -> None:
    result = invoke("inspect", make_model(tmp_path / "m.onnx", refused=True), "--json")
    assert result.exit_code == 4
    doc = json.loads(result.stdout)
    assert doc["converts"] is False and doc["exit_code"] == 4
    assert doc["graph"]["complete"] is False
    assert [n["kind"] for n in doc["graph"]["nodes"]] == ["input", "conv", "relu"]
    assert [(p["op"], p["node"]) for p in doc["unsupported"]] == [("Sigmoid", "sig"),
                                                                 ("Tanh", "Tanh_3")]
    assert all(p["reason"] for p in doc["unsupported"])


def test_drop_warns_loudly_and_converts(tmp_path: Path) -> None:
    path = make_model(tmp_path / "m.onnx", lrn=True)
    assert invoke("inspect", path).exit_code == 4
    result = invoke("inspect", path, "--drop", "LRN")
    assert result.exit_code == 0, result.output
    assert "onnx2snn: warning: --drop LRN" in result.stderr
    assert "dropped LRN node lrn on request" in result.stderr
    assert "dropped on request (--drop): LRN" in result.stdout
    doc = json.loads(invoke("inspect", path, "--drop", "LRN", "--json").stdout)
    assert doc["summary"]["drop_ops"] == ["LRN"] and doc["summary"]["warnings"]


def test_inspect_library_report(tmp_path: Path) -> None:
    report = inspect_model(make_model(tmp_path / "m.onnx"))
    assert report.converts and report.exit_code == 0
    assert report.opset == 13 and report.onnx_ops["Gemm"] == 1
    assert report.nodes[1].kind == "conv" and report.nodes[1].params == 76
    assert report.to_dict()["format"] == "onnx2snn-inspect"
    report = inspect_model(make_model(tmp_path / "r.onnx", refused=True))
    assert not report.converts and report.exit_code == 4
    assert [g[0] for g in report.problem_groups()] == ["Sigmoid", "Tanh"]


# -- docs/cli.md ---------------------------------------------------------------------------------
def test_cli_doc_covers_every_command_option_and_exit_code() -> None:
    """docs/cli.md is generated (tools/gen_cli_doc.py); regenerate it when this fails.

    Only what a user relies on is compared (commands, option names, the exit-code table), so
    rewording a help text does not make the suite red.
    """
    import click

    from onnx2snn.cli.reference import render_cli_reference

    doc = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    if not doc.exists():
        pytest.skip("no docs/ folder (tests run from an installed wheel)")
    text = doc.read_text(encoding="utf-8")
    hint = "docs/cli.md is stale: run `./dev shell python tools/gen_cli_doc.py`"
    fresh = render_cli_reference()
    exit_rows = [line for line in fresh.splitlines() if line[:4] in {f"| {c} " for c in range(10)}]
    assert len(exit_rows) >= 6
    for line in exit_rows:
        assert line in text, f"{hint} (exit codes changed: {line})"
    for name, command in main.commands.items():
        heading = f"## `onnx2snn {name}`"
        assert heading in text, f"{hint} (command {name} missing)"
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            if isinstance(param, click.Option):
                for opt in param.opts + param.secondary_opts:
                    assert opt in section, f"{hint} (option {opt} of {name} missing)"
