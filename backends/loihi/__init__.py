"""The ``loihi`` target: Loihi 2 through Lava (lava-nc 0.10.0).

``LoihiBackend`` quantizes an SNN graph to Loihi 2 fixed point (``onnx2snn.quantize``), writes the
quantized graph, a lava-dl netx HDF5 file when the network is sequential, a manifest and a
resource estimate (``artifacts``), and runs it in Lava's CPU simulator (``network``). Lava is
imported only when a network is run.
"""

from onnx2snn.backends.loihi.backend import LoihiBackend

__all__ = ["LoihiBackend"]
