"""The ``numpy`` target: the reference simulator (see ``simulator``). It emits no extra artifact:
the SNN graph file is what it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from onnx2snn.backends.base import Backend
from onnx2snn.backends.numpy import fixed_point as _fixed_point  # noqa: F401,I001  (registers Loihi kinds)
from onnx2snn.backends.numpy.simulator import SimResult, simulate
from onnx2snn.ir.graph import Graph


class NumpyBackend(Backend):
    """Runs SNN graphs with the reference simulator."""

    name = "numpy"
    description = "reference NumPy simulator"

    def emit(self, graph: Graph, out_dir: Path, **options: Any) -> list[Path]:
        return []

    def run(self, graph: Graph, x: np.ndarray, timesteps: int, **options: Any) -> SimResult:
        return simulate(graph, x, timesteps, **options)


__all__ = ["NumpyBackend", "SimResult", "simulate"]
