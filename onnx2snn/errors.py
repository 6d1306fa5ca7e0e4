"""The one error hierarchy of onnx2snn and the exit code each kind of error maps to.

Every error a user can cause derives from ``Onnx2SnnError``. Messages name the node, the op and what
to do about it; the CLI prints them as one line without a traceback (``-v`` shows the traceback).

Exit codes (the CLI's table, documented in docs/cli.md):

====  ==========================================================
0     success
1     internal error (a bug: please report it with ``-v`` output)
2     usage error (bad command-line options; click's own code)
3     input error: missing, unreadable or malformed model or data file
4     the model uses something onnx2snn cannot convert or a target cannot express (or too much memory)
5     a check failed: backends that must agree did not
====  ==========================================================
"""

from __future__ import annotations


class Onnx2SnnError(Exception):
    """Base of every error onnx2snn raises on purpose."""

    exit_code = 1


class InputFileError(Onnx2SnnError):
    """A model or data file is missing, unreadable, malformed or unsafe."""

    exit_code = 3


class FrontendError(Onnx2SnnError):
    """The ONNX graph cannot be turned into an ANN graph."""

    exit_code = 4


class UnsupportedModelError(FrontendError):
    """One or more nodes cannot be converted; ``problems`` lists every one of them.

    Each problem is ``(op_type, node_name, reason)``. The message lists them all, grouped by op and
    sorted, so a user sees everything to fix in one run.
    """

    def __init__(self, problems: list[tuple[str, str, str]], partial_graph: object = None):
        self.problems = sorted(set(problems))
        self.partial_graph = partial_graph
        super().__init__(format_problems(self.problems))


def format_problems(problems: list[tuple[str, str, str]]) -> str:
    """One message listing every unsupported node, grouped by op type then by reason."""
    groups: dict[tuple[str, str], list[str]] = {}
    for op, node, reason in sorted(problems):
        groups.setdefault((op, reason), []).append(node)
    lines = [f"cannot convert {len(problems)} node(s):"]
    for (op, reason), nodes in sorted(groups.items()):
        shown = ", ".join(nodes[:8]) + (f", ... ({len(nodes) - 8} more)" if len(nodes) > 8 else "")
        lines.append(f"  {op}: {reason} [nodes: {shown}]")
    return "\n".join(lines)


class IRError(Onnx2SnnError):
    """A graph of the intermediate representation is inconsistent (a bug or a corrupt file)."""


class PassError(Onnx2SnnError):
    """A graph pass (folding, calibration, quantization) failed."""

    exit_code = 4


class BackendError(Onnx2SnnError):
    """A backend cannot express, write or run the network."""

    exit_code = 4


class DataError(InputFileError):
    """A data file (.npz / .npy) is missing, malformed or does not fit the model."""


class CheckFailedError(Onnx2SnnError):
    """Backends or results that must agree did not."""

    exit_code = 5
