"""The pass manager: a pass is a pure function Graph -> Graph; the manager names the one that fails.

Every pass returns a new validated graph (``Graph`` validates on construction). When a pass raises,
``run_passes`` re-raises a ``PassError`` naming it and the passes that ran before it, which is what
one needs to find the culprit in a long pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from onnx2snn.errors import IRError, Onnx2SnnError, PassError
from onnx2snn.ir.graph import Graph

GraphPass = Callable[[Graph], Graph]


def run_passes(graph: Graph, passes: Sequence[GraphPass]) -> Graph:
    """Apply ``passes`` in order; a failure names the pass and those before it."""
    done: list[str] = []
    for p in passes:
        name = getattr(p, "__name__", repr(p))
        try:
            graph = p(graph)
        except IRError as e:
            before = ", ".join(done) or "none"
            raise PassError(f"pass {name} produced an invalid graph: {e} "
                            f"(passes before it: {before})") from e
        except Onnx2SnnError:
            raise
        done.append(name)
    return graph
