"""The output folder of ``onnx2snn convert``: what is in it, and writing it all-or-nothing.

    OUT/onnx2snn.json   manifest: target, files, recipe, source hash, versions
    OUT/network.snn     the SNN graph (re-emits to any target without recalibrating)
    OUT/source.onnx     a self-contained copy of the original model (the ANN oracle for
                        evaluate/compare; weights kept in an external file are put inside)
    OUT/report.md       a short human-readable report
    OUT/...             the target's own artifacts (NIR file, netx HDF5, ...)

Everything is first written into a temporary folder beside OUT and then moved into place, so a
failure or an interruption (Ctrl-C) leaves OUT as it was. Single output files (``evaluate --plot``)
go through ``write_output_file``: a temporary file beside them, then a rename. An existing OUT is
replaced only if it is empty or an earlier onnx2snn output folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnx2snn import __version__
from onnx2snn.errors import InputFileError, Onnx2SnnError
from onnx2snn.frontend.source_copy import copy_source_model
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.serialize import atomic_write_bytes, current_umask, load_graph, save_graph

MANIFEST = "onnx2snn.json"
GRAPH = "network.snn"
SOURCE = "source.onnx"


class OutputFolderError(Onnx2SnnError):
    """The output folder cannot be written (exists with other content, not writable, ...)."""

    exit_code = 3


def write_output_folder(out: str | os.PathLike[str], graph: Graph, source_model: str | None,
                        manifest: dict[str, Any],
                        extra: Callable[[Path], list[Path]] | None = None,
                        report: str = "") -> list[Path]:
    """Write graph, source copy, manifest, report and ``extra(folder)`` files into ``out`` atomically."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise OutputFolderError(f"{out}: exists and is not an onnx2snn output folder; choose another "
                                "-o or remove it")
    if out.exists() and Path.cwd().resolve().is_relative_to(out.resolve()):
        # the folder is replaced by a rename: the current folder would vanish under the caller
        raise OutputFolderError(f"{out}: is the current folder or contains it; choose a subfolder "
                                "with -o")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's folder is private (0700)
    except OSError as e:
        raise OutputFolderError(f"{out}: cannot create the output folder ({e.strerror})") from None
    try:
        save_graph(graph, tmp / GRAPH)
        files = [GRAPH]
        if source_model is not None:  # self-contained: external weights come inside
            files += [p.name for p in copy_source_model(source_model, tmp / SOURCE)]
        if extra is not None:
            files += [str(p.relative_to(tmp)) for p in extra(tmp)]
        if report:
            (tmp / "report.md").write_text(report)
            files.append("report.md")
        doc = {"format": "onnx2snn-output", "version": 1, "onnx2snn_version": __version__,
               "graph": GRAPH, "source": SOURCE if source_model else None, "files": files,
               "source_copy_sha256": _sha256(tmp / SOURCE) if source_model else None}
        doc.update(manifest)
        (tmp / MANIFEST).write_text(json.dumps(doc, indent=2, default=str) + "\n")
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=parent))
            try:
                os.replace(out, old / "x")
            except BaseException:
                shutil.rmtree(old, ignore_errors=True)
                raise
        try:
            os.replace(tmp, out)
        except BaseException:
            if old is not None:  # put the earlier output back
                os.replace(old / "x", out)
                shutil.rmtree(old, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / f for f in files]


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an output file whose folder is missing or that is a folder."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise OutputFolderError(f"{p}: is a folder; give a file name")
    if not parent.is_dir():
        raise OutputFolderError(f"{p}: the folder {str(parent)!r} does not exist; create it "
                                "first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputFolderError(f"{p}: the folder {str(parent)!r} is not writable")
    return p


def write_output_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write one output file atomically: a failure leaves no partial file and keeps an earlier one."""
    p = check_output_file(path)
    try:
        atomic_write_bytes(p, data)
    except OSError as e:
        raise OutputFolderError(f"{p}: cannot write ({e.strerror})") from None


@dataclass(frozen=True)
class OutputFolder:
    """A converted model read back: its SNN graph, manifest, and the path of the source ONNX copy."""

    path: Path
    graph: Graph
    manifest: dict[str, Any]

    @property
    def source(self) -> Path | None:
        """The copy of the original ONNX model, if the folder has one."""
        name = self.manifest.get("source")
        return self.path / name if name else None


def read_output_folder(path: str | os.PathLike[str]) -> OutputFolder:
    """Read a folder written by ``write_output_folder`` (or accept a bare ``.snn`` graph file)."""
    p = Path(path)
    if p.is_file():
        return OutputFolder(p.parent, load_graph(p), {"graph": p.name, "source": None})
    if not (p / MANIFEST).is_file():
        raise InputFileError(f"{p}: not an onnx2snn output folder (no {MANIFEST}); run "
                             "`onnx2snn convert` first")
    try:
        manifest = json.loads((p / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise InputFileError(f"{p / MANIFEST}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise InputFileError(f"{p / MANIFEST}: not an onnx2snn manifest (a JSON object is "
                             "expected); run `onnx2snn convert` again")
    for key in ("graph", "source"):
        name = manifest.get(key)
        if name is not None and (not isinstance(name, str) or Path(name).name != name
                                 or name in ("", ".", "..")):
            raise InputFileError(f"{p / MANIFEST}: {key!r} must name a file inside the folder, "
                                 f"got {name!r}; refusing to read elsewhere")
    digest, name = manifest.get("source_copy_sha256"), manifest.get("source")
    if isinstance(digest, str) and name and (p / name).is_file() and _sha256(p / name) != digest:
        # a damaged copy can pass onnx's checks and then hang onnxruntime: refuse it up front
        raise InputFileError(f"{p / name}: changed since onnx2snn convert wrote it (its SHA-256 "
                             "differs from the manifest's); run `onnx2snn convert` again")
    return OutputFolder(p, load_graph(p / manifest.get("graph", GRAPH)), manifest)


def _sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
