"""The intermediate representation: node types, the graph, and save/load to one file."""

from onnx2snn.ir import loihi as _loihi  # noqa: F401  (registers the Loihi node kinds for load_graph)
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import (
    Add,
    Affine,
    AvgPool,
    ChannelPermute,
    Concat,
    Conv,
    Dense,
    Input,
    LeakyRelu,
    MaxPool,
    Node,
    Pad,
    Relu,
    Reshape,
    Transpose,
)
from onnx2snn.ir.serialize import load_graph, save_graph
from onnx2snn.ir.spiking import IF, MaxPoolGate, Readout

__all__ = ["IF", "Add", "Affine", "AvgPool", "ChannelPermute", "Concat", "Conv", "Dense", "Graph",
           "Input", "LeakyRelu", "MaxPool", "MaxPoolGate", "Node", "Pad", "Readout", "Relu",
           "Reshape", "Transpose", "load_graph", "save_graph"]
