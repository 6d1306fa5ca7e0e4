"""Save and load IR graphs as one file (a NumPy ``.npz`` zip: JSON structure + arrays).

The file holds ``__graph__`` (UTF-8 JSON: format version, node kinds, attributes, outputs, meta)
and one array entry per array field (``a0``, ``a1``, ...). Loading never unpickles. Saving writes a
temporary file beside the target and renames it, so a failed save leaves no half-written file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from onnx2snn.errors import InputFileError, IRError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Node

FORMAT = "onnx2snn-graph"
VERSION = 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def graph_to_bytes(graph: Graph) -> bytes:
    """Serialize ``graph`` to the bytes of the one-file format."""
    arrays: dict[str, np.ndarray] = {}
    nodes = []
    for n in graph.nodes:
        refs = {}
        for fname, arr in n.arrays().items():
            key = f"a{len(arrays)}"
            arrays[key] = np.ascontiguousarray(arr)
            refs[fname] = key
        nodes.append({"kind": n.kind, "name": n.name, "inputs": list(n.inputs),
                      "shape": list(n.shape), "origin": list(n.origin),
                      "attributes": _jsonable(n.attributes()), "arrays": refs})
    doc = {"format": FORMAT, "version": VERSION, "nodes": nodes, "outputs": list(graph.outputs),
           "meta": _jsonable(dict(graph.meta))}
    arrays["__graph__"] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    # stored, not deflated: float weights do not compress (4 % on a ResNet-50's 196 MB, for 7 s of
    # CPU, a quarter of convert's time after calibration); np.load reads both, and a damaged
    # member still fails its CRC check (zipfile.BadZipFile) when read
    np.savez(buf, **arrays)
    return buf.getvalue()


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def graph_from_bytes(data: bytes, source: str = "<bytes>") -> Graph:
    """Rebuild a graph from the one-file format; ``InputFileError`` if it is not one."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            doc = json.loads(bytes(z["__graph__"]).decode())
            if doc.get("format") != FORMAT:
                raise InputFileError(f"{source}: not an onnx2snn graph file")
            if doc.get("version", 0) > VERSION:
                raise InputFileError(f"{source}: graph format version {doc['version']} is newer "
                                     f"than this onnx2snn reads ({VERSION}); upgrade onnx2snn")
            nodes = []
            for d in doc["nodes"]:
                cls = Node.registry.get(d["kind"])
                if cls is None:
                    raise InputFileError(f"{source}: unknown node kind {d['kind']!r}")
                kwargs = {k: _tupled(v) for k, v in d["attributes"].items()}
                kwargs.update({k: z[key] for k, key in d["arrays"].items()})
                nodes.append(cls(name=d["name"], inputs=tuple(d["inputs"]),
                                 shape=tuple(d["shape"]), origin=tuple(d["origin"]), **kwargs))
            # inside the try: validating the whole graph is where most corruption shows
            return Graph(tuple(nodes), tuple(doc["outputs"]), doc.get("meta", {}))
    except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, TypeError, AttributeError,
            OSError, EOFError, RuntimeError, NotImplementedError) as e:
        # zlib.error: a damaged compressed member; AttributeError: JSON of another shape
        raise InputFileError(f"{source}: not a readable onnx2snn graph file ({e})") from e
    except IRError as e:
        raise InputFileError(f"{source}: the graph in the file is inconsistent: {e}") from e


def current_umask() -> int:
    """The process's file-creation mask (``os.umask`` can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes the file private (0600); give it the mode open() would have
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_graph(graph: Graph, path: str | os.PathLike[str]) -> None:
    """Save ``graph`` to ``path`` in one file, atomically."""
    atomic_write_bytes(path, graph_to_bytes(graph))


def load_graph(path: str | os.PathLike[str]) -> Graph:
    """Load a graph saved by ``save_graph``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read ({e.strerror})") from None
    return graph_from_bytes(data, str(path))
