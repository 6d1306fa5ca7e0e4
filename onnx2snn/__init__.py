"""onnx2snn: convert ONNX neural networks to spiking neural networks.

Pipeline: ONNX file -> frontend -> ANN graph -> conversion (calibration) -> SNN graph -> passes ->
backends (numpy reference simulator, Loihi 2 through Lava, NIR).
"""

__version__ = "0.1.0"
