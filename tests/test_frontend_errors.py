"""Bad input files: one clear error line, exit code 3, no traceback, nothing written.

Driven through the CLI (click's CliRunner in an isolated folder) and the library. Also: internal
errors exit 1 with a hint to rerun with -v, and -v shows tracebacks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnx2snn.cli.main import main
from onnx2snn.errors import InputFileError
from onnx2snn.frontend import load_model, onnx_to_ann


def small_model() -> onnx.ModelProto:
    """Gemm with a weight big enough that half the file's bytes cut into the tensor data."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(32, 64)).astype(np.float32),
                                "w")
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)
    m = helper.make_model(helper.make_graph([node], "g", [x], [y], [w]),
                          opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def with_external_weight(location: str) -> onnx.ModelProto:
    m = small_model()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    return m


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1)
            for p in sorted(root.rglob("*"))}


def _missing(root: Path) -> str:
    return "nothere.onnx"


def _folder(root: Path) -> str:
    (root / "adir.onnx").mkdir()
    return "adir.onnx"


def _text(root: Path) -> str:
    (root / "notes.onnx").write_text("this is a text file, not a model\n" * 20)
    return "notes.onnx"


def _empty(root: Path) -> str:
    (root / "empty.onnx").write_bytes(b"")
    return "empty.onnx"


def _truncated(root: Path) -> str:
    data = small_model().SerializeToString()
    (root / "half.onnx").write_bytes(data[: len(data) // 2])
    return "half.onnx"


def _external(location: Callable[[Path], str]) -> Callable[[Path], str]:
    def make(root: Path) -> str:
        (root / "secret.bin").write_bytes(np.ones(32 * 64, np.float32).tobytes())
        (root / "model").mkdir()
        (root / "model" / "m.onnx").write_bytes(
            with_external_weight(location(root)).SerializeToString())
        return os.path.join("model", "m.onnx")
    return make


def _symlink_out(root: Path) -> str:
    path = _external(lambda r: "link.bin")(root)
    (root / "model" / "link.bin").symlink_to(root / "secret.bin")
    return path


BAD_FILES: dict[str, Callable[[Path], str]] = {
    "missing": _missing,
    "folder": _folder,
    "text": _text,
    "empty": _empty,
    "truncated": _truncated,
    "external_parent": _external(lambda r: "../secret.bin"),
    "external_absolute": _external(lambda r: str(r / "secret.bin")),
    "external_symlink_out": _symlink_out,
    "external_missing": _external(lambda r: "gone.bin"),
}


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_one_line_exit_3_nothing_written(case: str, json_flag: list[str],
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # An isolated folder as the working directory (click 8.2+ deprecates isolated_filesystem).
    root = tmp_path.resolve()
    monkeypatch.chdir(root)
    path = BAD_FILES[case](root)
    before = listing(root)
    result = CliRunner().invoke(main, ["inspect", path, *json_flag])
    assert result.exit_code == 3, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onnx2snn: error: ") and path in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert listing(root) == before


def test_error_messages_say_what_is_wrong(tmp_path: Path) -> None:
    expected = {"missing": "no such file", "folder": "is a folder", "text": "not an ONNX model",
                "empty": "not an ONNX model", "truncated": "truncated",
                "external_parent": "outside the model's folder",
                "external_absolute": "outside the model's folder",
                "external_symlink_out": "outside the model's folder",
                "external_missing": "is missing"}
    for case, words in expected.items():
        root = tmp_path / case
        root.mkdir()
        path = BAD_FILES[case](root)
        with pytest.raises(InputFileError, match=words):
            load_model(root / path)


def test_verbose_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["-v", "inspect", "nothere.onnx"], ["inspect", "nothere.onnx", "-v"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 3
        assert "Traceback" in result.stderr and "InputFileError" in result.stderr
        assert result.stderr.strip().splitlines()[-1] == \
            "onnx2snn: error: nothere.onnx: no such file"


def test_internal_error_exit_1_with_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx2snn.inspect

    def boom(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(onnx2snn.inspect, "inspect_model", boom)
    runner = CliRunner()
    result = runner.invoke(main, ["inspect", "whatever.onnx"])
    assert result.exit_code == 1
    assert "internal error" in result.stderr and "-v" in result.stderr
    assert "ZeroDivisionError: simulated bug" in result.stderr
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["-v", "inspect", "whatever.onnx"])
    assert result.exit_code == 1 and "Traceback" in result.stderr


def test_external_data_inside_the_folder_is_read(tmp_path: Path) -> None:
    m = small_model()
    weight = numpy_helper.to_array(m.graph.initializer[0]).copy()
    onnx.save_model(m, tmp_path / "m.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="m.data", size_threshold=0)
    assert (tmp_path / "m.data").exists()
    g = onnx_to_ann(tmp_path / "m.onnx")
    np.testing.assert_array_equal(g["fc"].weight, weight)


def test_external_data_from_bytes_is_refused() -> None:
    data = with_external_weight("w.bin").SerializeToString()
    with pytest.raises(InputFileError, match="load the model from its path"):
        load_model(data)


def test_library_refuses_text_bytes_and_old_opsets() -> None:
    with pytest.raises(InputFileError, match="not an ONNX model"):
        load_model(b"hello world")
    m = small_model()
    m.opset_import[0].version = 7
    with pytest.raises(InputFileError, match="older than"):
        load_model(m)


def test_checker_failure_is_input_error() -> None:
    m = small_model()
    m.graph.node[0].input[1] = "undefined_weight"
    with pytest.raises(InputFileError, match="checker"):
        load_model(m)
