"""Every command that writes does so atomically: a failed or interrupted run leaves no partial output.

``convert`` and ``emit`` build OUT/ in a temporary folder beside it and rename it into place;
``evaluate --plot`` writes its image through a temporary file and a rename. Interrupting them
(Ctrl-C is a ``KeyboardInterrupt``) or making them fail while writing must leave either nothing or
the earlier output, byte for byte, and no temporary file or folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import onnx2snn.artifacts
import onnx2snn.ir.serialize
from onnx2snn.backends.nir import NirBackend
from onnx2snn.backends.numpy import NumpyBackend
from onnx2snn.cli.main import main

MODELS = Path(__file__).resolve().parents[1] / "models"
MLP = MODELS / "digits_mlp.onnx"
CALIB = MODELS / "digits_calib.npz"
TEST = MODELS / "digits_test.npz"


def invoke(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file and folder under ``folder`` (hidden ones too) with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """The earlier output: the bundled MLP converted once for the module (v0 = 0, a recipe every
    target can emit: the NIR file has no initial potential)."""
    out = tmp_path_factory.mktemp("atomic") / "mlp"
    assert invoke("convert", MLP, "--calib", CALIB, "-o", out, "-q", "--v0", "zero").exit_code == 0
    return out


def interrupt_while_writing(monkeypatch, backend: type) -> None:
    """Ctrl-C after the backend wrote half of its files into the (temporary) output folder."""
    def emit(self, graph, out_dir, **options):
        (out_dir / "half_written.bin").write_bytes(b"\0" * 100)
        raise KeyboardInterrupt()

    monkeypatch.setattr(backend, "emit", emit)


@pytest.mark.parametrize("earlier", [False, True], ids=["no_earlier_out", "earlier_out"])
def test_convert_interrupted_leaves_no_partial_out(isolated: Path, converted: Path, monkeypatch,
                                                   earlier: bool) -> None:
    if earlier:
        shutil.copytree(converted, "out")
    before = snapshot(isolated)
    interrupt_while_writing(monkeypatch, NumpyBackend)
    result = invoke("convert", MLP, "--calib", CALIB, "-o", "out", "-q")
    assert result.exit_code == 130, (result.exit_code, result.stderr)
    assert result.stderr.strip() == "onnx2snn: interrupted"
    assert snapshot(isolated) == before  # no OUT/ (or the earlier one intact), no temporary folder


def test_emit_interrupted_or_failing_keeps_the_earlier_out(isolated: Path, converted: Path,
                                                            monkeypatch) -> None:
    assert invoke("emit", converted, "--target", "nir", "-o", "out_nir").exit_code == 0
    before = snapshot(isolated)
    interrupt_while_writing(monkeypatch, NirBackend)
    result = invoke("emit", converted, "--target", "nir", "-o", "out_nir")
    assert result.exit_code == 130, result.stderr
    assert snapshot(isolated) == before


def test_interrupt_between_moving_out_away_and_in_restores_it(isolated: Path, converted: Path,
                                                              monkeypatch) -> None:
    """The one moment OUT/ is absent: the old folder is moved aside, the new one not yet in."""
    shutil.copytree(converted, "out")
    before = snapshot(isolated)
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the first moves the old OUT aside, the second brings the new in
            raise KeyboardInterrupt()
        return real_replace(src, dst)

    monkeypatch.setattr(onnx2snn.artifacts.os, "replace", replace)
    result = invoke("convert", MLP, "--calib", CALIB, "-o", "out", "-q")
    assert result.exit_code == 130, result.stderr
    assert len(calls) >= 2
    monkeypatch.setattr(onnx2snn.artifacts.os, "replace", real_replace)
    assert snapshot(isolated) == before


def test_evaluate_plot_interrupted_or_failing_keeps_the_earlier_plot(
        isolated: Path, converted: Path, monkeypatch) -> None:
    args = ["evaluate", converted, "--data", TEST, "-T", "1,2", "--limit", "20", "-q"]
    assert invoke(*args, "--plot", "acc.png").exit_code == 0
    before = snapshot(isolated)
    assert before["acc.png"].startswith(b"\x89PNG")

    real_fdopen = os.fdopen

    class Failing:  # the disk fills up after the first bytes of the image
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:10])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx2snn.ir.serialize.os, "fdopen", lambda fd, mode: Failing(
        real_fdopen(fd, mode)))
    result = invoke(*args, "--plot", "acc.png")
    monkeypatch.setattr(onnx2snn.ir.serialize.os, "fdopen", real_fdopen)
    assert result.exit_code == 3, result.stderr
    assert "acc.png: cannot write (No space left on device)" in result.stderr
    assert snapshot(isolated) == before


def test_evaluate_plot_checked_before_the_run(isolated: Path, converted: Path) -> None:
    args = ["evaluate", converted, "--data", TEST, "-T", "1", "--limit", "5", "-q"]
    result = invoke(*args, "--plot", "nofolder/acc.png")
    assert result.exit_code == 3
    assert "the folder 'nofolder' does not exist" in result.stderr
    result = invoke(*args, "--plot", "acc.xyz")
    assert result.exit_code == 2 and "cannot draw a .xyz file" in result.stderr
    assert os.listdir(".") == []


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch) -> Path:
    """An empty current folder: the commands' relative outputs land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_changed_source_copy_is_refused_before_onnxruntime_reads_it(
        converted: Path, tmp_path: Path) -> None:
    # fuzz seed 7 found a damaged OUT/source.onnx that passes onnx's checks and then hangs
    # onnxruntime's session creation: the manifest's hash of the copy catches it first
    out = tmp_path / "copy"
    shutil.copytree(converted, out)
    data = bytearray((out / "source.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "source.onnx").write_bytes(bytes(data))
    result = invoke("evaluate", out, "--data", TEST, "-T", "4", "-q")
    assert result.exit_code == 3, result.output
    assert "changed since onnx2snn convert wrote it" in result.stderr
    assert "Traceback" not in result.output
