"""Backends: ``numpy`` (reference simulator), ``loihi`` (Lava), ``nir`` (NIR files).

Backends are looked up by name; their modules are imported only when asked for, so listing them is
cheap and does not import Lava.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from onnx2snn.errors import BackendError

if TYPE_CHECKING:
    from onnx2snn.backends.base import Backend

# name -> (module, class, one-line description)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "numpy": ("onnx2snn.backends.numpy", "NumpyBackend",
              "reference NumPy simulator (float, ideal or loihi schedule)"),
    "loihi": ("onnx2snn.backends.loihi", "LoihiBackend", "Intel Loihi 2 through Lava (lava-nc)"),
    "nir": ("onnx2snn.backends.nir", "NirBackend", "NIR exchange format (nir)"),
}


def list_backends() -> dict[str, str]:
    """Backend names and descriptions, without importing any backend."""
    return {k: v[2] for k, v in REGISTRY.items()}


def cannot_express_message(target: str, problems: list[str], one_line: bool = False) -> str:
    """"the TARGET target cannot express this network:" and every problem its ``check`` found,
    one per indented line, or joined by "; " on one line (compare's notes)."""
    head = f"the {target} target cannot express this network:"
    if one_line:
        return f"{head} " + "; ".join(problems)
    return head + "\n  " + "\n  ".join(problems)


def cannot_express(target: str, problems: list[str]) -> BackendError:
    """The error for a network ``target`` cannot express (exit code 4): every problem its
    ``check`` found, one per line. Said alike before calibration (``onnx2snn.convert.preflight``)
    and after it."""
    return BackendError(cannot_express_message(target, problems))


def get_backend(name: str) -> Backend:
    """An instance of backend ``name``; ``BackendError`` if unknown or not available."""
    if name not in REGISTRY:
        raise BackendError(f"unknown target {name!r}; choose one of {', '.join(REGISTRY)}")
    module, cls, _ = REGISTRY[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise BackendError(f"the {name} backend is not available here ({e})") from None
    return getattr(mod, cls)()
