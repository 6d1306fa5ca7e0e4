"""onnx2snn: convert ONNX neural networks to spiking neural networks.

Pipeline: ONNX file -> frontend -> ANN graph -> conversion (calibration) -> SNN graph -> passes ->
backends (numpy reference simulator, Loihi 2 through Lava, NIR).
"""

from onnx2snn.blas import quiet_idle_threads

__version__ = "0.1.0"

# before anything imports NumPy: OpenBLAS's idle threads must not spin (onnx2snn.blas)
quiet_idle_threads()
