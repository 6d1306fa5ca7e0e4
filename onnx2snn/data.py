"""Reading data sets: ``.npz`` with ``x`` (N, *input shape) and optional ``y`` (N,), or ``.npy`` of x.

Data files are loaded without pickles and checked against the model's input shape, so a wrong file
fails with one clear ``DataError`` instead of a shape error deep inside a simulation.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from onnx2snn.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (N, *shape) float32 and optional integer labels ``y`` (N,)."""

    x: np.ndarray
    y: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def head(self, n: int | None) -> Dataset:
        """The first ``n`` samples (all if ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return Dataset(self.x[:n], None if self.y is None else self.y[:n], self.source)


def physical_memory() -> int | None:
    """Bytes of RAM of this machine (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _check_declared_sizes(p: Path) -> None:
    """Refuse, from the headers alone, arrays that claim more memory than the machine has.

    A ``.npy`` header (also inside a ``.npz``) states shape and dtype; numpy allocates that much
    before reading, so a corrupt or hostile header would fail with a MemoryError or fill memory.
    """
    limit = physical_memory()
    if limit is None:
        return
    members: list[tuple[str, Any]] = []
    with open(p, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    if is_zip:
        with zipfile.ZipFile(p) as z:
            for name in z.namelist():
                if name.endswith(".npy"):
                    with z.open(name) as m:
                        members.append((name[:-4], _header(m)))
    else:
        with open(p, "rb") as f:
            members.append(("x", _header(f)))
    for name, header in members:
        if header is None:
            continue
        shape, dtype = header
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if nbytes > limit:
            raise DataError(f"{p}: array {name!r} declares shape {tuple(shape)} of {dtype} "
                            f"({nbytes / 2**30:.3g} GiB), more than this machine's memory "
                            f"({limit / 2**30:.3g} GiB); the file is corrupt or too large: "
                            "split it")


def _header(f: IO[bytes]) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype from a ``.npy`` header, or None if ``f`` does not start with one."""
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError):
        return None  # np.load below gives the message
    return tuple(shape), np.dtype(dtype)


def load_dataset(path: str | os.PathLike[str], input_shape: tuple[int, ...] | None = None,
                 limit: int | None = None, n_classes: int | None = None) -> Dataset:
    """Load a data file; with ``input_shape`` check (and if needed reshape) the samples to it.

    With ``n_classes`` (the number of outputs of a classifier) labels must lie in
    ``0 .. n_classes - 1``; labels are never negative.
    """
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p}: is a folder, not a data file (no such data file)")
    if not p.is_file():
        raise DataError(f"{p}: no such data file")
    try:
        _check_declared_sizes(p)
        # np.load goes by the file's magic bytes, not its suffix: dispatch on what it returns
        loaded = np.load(p, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            x, y = loaded, None
        else:
            with loaded as z:
                if "x" not in z.files:
                    raise DataError(f"{p}: the .npz has no array 'x' (it has: "
                                    f"{', '.join(z.files) or 'nothing'})")
                x = z["x"]
                y = z["y"] if "y" in z.files else None
    except ValueError as e:
        with open(p, "rb") as f:  # a pickle starts with its protocol opcode, 0x80
            is_pickle = f.read(1) == b"\x80"
        if "Object arrays" in str(e) or (is_pickle and "pickled" in str(e)):
            raise DataError(f"{p}: holds Python objects (pickled data), which onnx2snn never "
                            "loads (unpickling can run code); save plain numeric arrays, e.g. "
                            "np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))") \
                from None
        raise DataError(f"{p}: not a readable .npz/.npy file ({e})") from None
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, RuntimeError,
            NotImplementedError) as e:
        # members of a damaged .npz fail to decompress (zlib.error; RuntimeError and
        # NotImplementedError: an unknown compression method)
        raise DataError(f"{p}: not a readable .npz/.npy file ({e})") from None
    except MemoryError:
        raise DataError(f"{p}: too large to load into memory; split it") from None
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataError(f"{p}: 'x' holds no samples")
    if x.size == 0:
        raise DataError(f"{p}: 'x' has shape {x.shape}: each sample is empty")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{p}: 'x' is not real-valued (dtype {x.dtype}); save numbers, e.g. "
                        "x.astype(np.float32)")
    if y is not None:
        if y.shape != (x.shape[0],):
            raise DataError(f"{p}: 'y' must have shape ({x.shape[0]},), got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{p}: 'y' must hold integer class labels, got dtype {y.dtype}")
        check_labels(y, n_classes, str(p))
    if input_shape is not None and x.shape[1:] != tuple(input_shape):
        if int(np.prod(x.shape[1:])) == int(np.prod(input_shape)):
            x = x.reshape((x.shape[0],) + tuple(input_shape))
        else:
            raise DataError(f"{p}: samples have shape {x.shape[1:]}, the model expects "
                            f"{tuple(input_shape)}")
    with np.errstate(over="ignore"):
        x = np.ascontiguousarray(x, dtype=np.float32)
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise DataError(f"{p}: 'x' holds {bad} NaN or infinite value(s) (in float32)")
    ds = Dataset(x, y, str(p))
    return ds.head(limit)


def check_labels(y: np.ndarray, n_classes: int | None, source: str) -> None:
    """Labels are class indices: >= 0, and < ``n_classes`` when the number of classes is known."""
    if y.size == 0:
        return
    low, high = int(y.min()), int(y.max())
    top = None if n_classes is None else n_classes - 1
    if low < 0 or (top is not None and high > top):
        i = int(np.argmax(y < 0)) if low < 0 else int(np.argmax(y > top))
        allowed = f"0..{top} (the model has {n_classes} outputs)" if top is not None else ">= 0"
        raise DataError(f"{source}: label {int(y[i])} of sample {i} is not a class index "
                        f"{allowed}; labels must be the index of the true class")
