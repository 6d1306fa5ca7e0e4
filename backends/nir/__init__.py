"""The ``nir`` target: SNN graph → ``network.nir`` (NIR 1.0), and back, and run under NIR semantics.

``export`` maps the IR to NIR primitives (binary spikes, spike worth folded into weights,
``SumPool2d``, reset to zero by default or the exact subtractive loop); ``importer`` reads any NIR
graph into an IR graph that means what the file means (``NirNeuron``: reset to ``v_reset``) and
restores our own exports exactly; ``nodes`` holds the NIR-semantics node kinds and registers
their simulator runner. ``NirBackend.run`` writes the file, reads it back with ``nir.read`` and
simulates what was read, so a user sees what a consumer of the file gets. See docs/nir.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from onnx2snn.backends.base import Backend
from onnx2snn.backends.nir.export import (
    NIR_FORMS,
    NIR_POOL_MODES,
    NIR_RESET_MODES,
    check_nir,
    to_nir,
)
from onnx2snn.backends.nir.importer import from_nir, read_nir_file, restore_ir
from onnx2snn.backends.nir.nodes import NirNeuron, SumPool
from onnx2snn.backends.numpy.simulator import SimResult, simulate
from onnx2snn.errors import BackendError
from onnx2snn.ir.graph import Graph

NIR_FILE = "network.nir"


def write_nir(graph: Graph, path: str | Path, reset: str = "zero", pool: str = "sum",
              dtype: Any = np.float32, form: str = "generic") -> Path:
    """Export ``graph`` and write it with ``nir.write``; returns the path.

    nir 1.0.8 writes every ``IF``'s ``v_reset``, which nir 1.0.4 (Sinabs) cannot read: the
    zero ones are removed from the file (nir 1.0.8 reads a missing ``v_reset`` as 0). The file
    is written next to ``path`` and renamed, so a failure leaves no half-written file.
    """
    import nir

    path = Path(path)
    graph_nir = to_nir(graph, reset=reset, pool=pool, dtype=dtype, form=form)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        nir.write(tmp, graph_nir)
        drop_zero_v_reset(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def drop_zero_v_reset(path: str | Path) -> None:
    """Remove every all-zero ``v_reset`` of an ``IF`` from a written ``.nir`` file, in place."""
    import h5py

    with h5py.File(path, "r+") as f:
        nodes = f["node/nodes"]
        for name in nodes:
            node = nodes[name]
            if ("v_reset" in node and node["type"][()] in (b"IF", "IF")
                    and not np.any(node["v_reset"][()])):
                del node["v_reset"]


def is_nir_graph(graph: Graph) -> bool:
    """True if ``graph`` was read from NIR (already in NIR semantics)."""
    return graph.meta.get("stage") == "nir"


class NirBackend(Backend):
    """Writes ``network.nir``; runs a network as its NIR file means it."""

    name = "nir"
    description = "NIR exchange format (nir)"
    deployable = True

    def check(self, graph: Graph, nir_reset: str = "zero", nir_pool: str = "sum",
              nir_for: str = "generic", **options: Any) -> list[str]:
        if is_nir_graph(graph):
            return []
        return check_nir(graph, reset=nir_reset, pool=nir_pool, form=nir_for)

    def emit(self, graph: Graph, out_dir: Path, nir_reset: str = "zero", nir_pool: str = "sum",
             nir_for: str = "generic", **options: Any) -> list[Path]:
        path = write_nir(graph, Path(out_dir) / NIR_FILE, reset=nir_reset, pool=nir_pool,
                         form=nir_for)
        read_nir_file(path)  # nir.read must open every file we write
        return [path]

    def run(self, graph: Graph, x: np.ndarray, timesteps: int, *, artifact_dir: str | None = None,
            nir_reset: str = "zero", nir_pool: str = "sum", nir_for: str = "generic",
            dtype: Any = np.float32, schedule: str = "ideal", **options: Any) -> SimResult:
        """Simulate under NIR semantics: a graph read from NIR as is; else ``artifact_dir``'s
        network.nir if there is one; else ``graph`` written to a temporary .nir and read back."""
        if schedule != "ideal":
            raise BackendError("a NIR graph has no synaptic delays: run it with the ideal schedule")
        if options.get("encoder", "direct") != "direct":
            raise BackendError("the nir backend feeds the analog input every step (direct "
                               "encoding), as a NIR Input does")
        options.pop("encoder", None)
        if is_nir_graph(graph):
            nir_graph = graph
        elif artifact_dir is not None and (Path(artifact_dir) / NIR_FILE).is_file():
            nir_graph = from_nir(Path(artifact_dir) / NIR_FILE)
        else:
            with tempfile.TemporaryDirectory(prefix="onnx2snn-nir-") as tmp:
                path = write_nir(graph, Path(tmp) / NIR_FILE, reset=nir_reset, pool=nir_pool,
                                 form=nir_for)
                nir_graph = from_nir(path)
        result = simulate(nir_graph, x, timesteps, dtype=dtype, **options)
        if nir_graph is not graph:  # report under the IR's names, which the file records
            back = dict(nir_graph.meta.get("ir_names", {}))
            tables: list[dict[str, Any]] = [result.predictions, result.spikes, result.neurons,
                                            result.recorded]
            for table in tables:
                for key in [k for k in table if k in back and back[k] != k]:
                    table[back[key]] = table.pop(key)
        return result


__all__ = ["NIR_FILE", "NIR_FORMS", "NIR_POOL_MODES", "NIR_RESET_MODES", "NirBackend", "NirNeuron",
           "SumPool", "check_nir", "drop_zero_v_reset", "from_nir", "is_nir_graph", "read_nir_file",
           "restore_ir", "to_nir", "write_nir"]
