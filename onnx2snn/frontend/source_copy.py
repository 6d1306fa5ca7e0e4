"""The copy of the source model that an output folder keeps (OUT/source.onnx): self-contained.

Exporters may keep the weights in a separate file (PyTorch's dynamo exporter writes
``model.onnx`` + ``model.onnx.data``; any ``onnx.save(..., save_as_external_data=True)``). A bare
copy of ``model.onnx`` would then point at a data file that is not in the folder, and
``evaluate``/``compare``/``emit`` would fail later. ``copy_source_model`` writes the model with
its weights inside when it fits in one protobuf (under 2 GB), else with one data file next to it
(``source.onnx.data``); a model without external data is copied byte for byte.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx

from onnx2snn.errors import InputFileError

PROTOBUF_LIMIT = 2**31 - 1  # bytes one serialized ModelProto may hold


def has_external_data(model: onnx.ModelProto) -> bool:
    """True if some tensor of the model keeps its data in an external file."""
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors)


def copy_source_model(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Write a self-contained copy of the ONNX file ``source`` to ``dest``; returns the files."""
    source, dest = Path(source), Path(dest)
    try:
        header = onnx.load(str(source), load_external_data=False)
    except Exception as e:  # protobuf and onnx raise several kinds
        raise InputFileError(f"{source}: cannot read the model to copy it ({e})") from None
    if not has_external_data(header):
        shutil.copyfile(source, dest)
        return [dest]
    # the frontend's loader has already refused data paths outside the model's folder
    model = onnx.load(str(source), load_external_data=True)
    if model.ByteSize() < PROTOBUF_LIMIT:
        onnx.save(model, str(dest))
        return [dest]
    data = dest.with_name(dest.name + ".data")
    onnx.save(model, str(dest), save_as_external_data=True, all_tensors_to_one_file=True,
              location=data.name)
    return [dest, data]


__all__ = ["copy_source_model", "has_external_data"]
