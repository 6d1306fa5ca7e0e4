"""The ONNX frontend: load and check a model, convert it to an ANN graph (see ``build``)."""

from onnx2snn.frontend.build import convert_model, onnx_to_ann, scan
from onnx2snn.frontend.load import LoadedModel, load_model

__all__ = ["LoadedModel", "convert_model", "load_model", "onnx_to_ann", "scan"]
