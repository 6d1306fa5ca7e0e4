"""What every backend offers: ``check`` what it cannot express, ``emit`` its artifact, ``run`` it.

A backend is registered in ``onnx2snn.backends`` by name and module path only, so listing backends
imports nothing heavy (Lava is imported only when the loihi backend is used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from onnx2snn.ir.graph import Graph


class Backend:
    """Base class of the backends; subclasses set ``name`` and implement the methods they can."""

    name = ""
    description = ""
    deployable = False  # does emit() write something a real target loads?

    def check(self, graph: Graph, **options: Any) -> list[str]:
        """Everything in ``graph`` this backend cannot express, one line per problem (node named)."""
        return []

    def emit(self, graph: Graph, out_dir: Path, **options: Any) -> list[Path]:
        """Write the backend's artifact(s) into ``out_dir``; return the paths written."""
        return []

    def run(self, graph: Graph, x: np.ndarray, timesteps: int, **options: Any) -> Any:
        """Run the network on inputs ``x`` for ``timesteps`` steps; returns a ``SimResult``."""
        raise NotImplementedError(f"the {self.name} backend has no runtime")
