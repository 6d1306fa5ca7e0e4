"""Loading an ONNX model safely: from a path, bytes or a ModelProto, with the guards users need.

Refuses, with one clear ``InputFileError`` each: a missing or unreadable file, bytes that are not an
ONNX model (including truncated files), external data whose location is outside the model's folder
(absolute paths, ``..``, links pointing elsewhere, folders); then ``validate.validate_model``
refuses malformed models (checker, opsets, inputs, constants, attribute ranges).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from onnx2snn.errors import InputFileError
from onnx2snn.frontend.validate import validate_model

MIN_OPSET = 9


@dataclass(frozen=True)
class LoadedModel:
    """A checked ONNX model, where it came from, and the SHA-256 of its bytes."""

    model: onnx.ModelProto
    source: str
    sha256: str
    folder: Path | None

    @property
    def opset(self) -> int:
        """The model's opset of the default ONNX domain."""
        return default_opset(self.model)


def default_opset(model: onnx.ModelProto) -> int:
    """Opset version of the default domain ("" or "ai.onnx"); 1 if the model declares none."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def _parse(data: bytes, source: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise InputFileError(f"{source}: not an ONNX model (cannot parse: {e}); is the file "
                             "truncated or of another format?") from None
    if not model.HasField("graph") or not model.graph.node:
        raise InputFileError(f"{source}: not an ONNX model (no graph with nodes in it)")
    return model


def _check_external_data(model: onnx.ModelProto, folder: Path | None, source: str) -> bool:
    """Refuse external data locations outside ``folder``; True if the model has external data."""
    found = False
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        found = True
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        if folder is None:
            raise InputFileError(f"{source}: tensor {t.name!r} keeps its data in an external file "
                                 f"({location!r}); load the model from its path instead of bytes")
        target = (folder / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(folder.resolve()):
            raise InputFileError(f"{source}: tensor {t.name!r} points at external data "
                                 f"{location!r} outside the model's folder; refusing to read it")
        if target.is_dir():
            raise InputFileError(f"{source}: external data location {location!r} of tensor "
                                 f"{t.name!r} is a folder, not a file")
        if not target.is_file():
            raise InputFileError(f"{source}: external data file {location!r} of tensor "
                                 f"{t.name!r} is missing")
    return found


def load_model(model: str | os.PathLike[str] | bytes | onnx.ModelProto) -> LoadedModel:
    """Load and check an ONNX model from a path, its bytes, or a ``ModelProto``."""
    folder: Path | None = None
    if isinstance(model, onnx.ModelProto):
        source = model.graph.name or "<ModelProto>"
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        data = proto.SerializeToString()
    else:
        if isinstance(model, bytes):
            source, data = "<bytes>", model
        else:
            path = Path(model)
            source = str(path)
            if not path.exists():
                raise InputFileError(f"{source}: no such file")
            if path.is_dir():
                raise InputFileError(f"{source}: is a folder, not an ONNX file")
            try:
                data = path.read_bytes()
            except OSError as e:
                raise InputFileError(f"{source}: cannot read ({e.strerror})") from None
            folder = path.parent
        proto = _parse(data, source)
    external = _check_external_data(proto, folder, source)
    if external and folder is not None:
        onnx.external_data_helper.load_external_data_for_model(proto, str(folder))
    opset = default_opset(proto)
    if opset < MIN_OPSET:
        raise InputFileError(f"{source}: opset {opset} is older than the oldest onnx2snn reads "
                             f"({MIN_OPSET}); re-export with a newer opset "
                             "(onnx.version_converter.convert_version can upgrade it)")
    # The bytes we already hold spare the checker a second serialization (seconds for VGG).
    validate_model(proto, source, None if external else data)
    return LoadedModel(proto, source, hashlib.sha256(data).hexdigest(), folder)
