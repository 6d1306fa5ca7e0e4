"""Reading data sets: ``.npz`` with ``x`` (N, *input shape) and optional ``y`` (N,), or ``.npy`` of x.

Data files are loaded without pickles and checked against the model's input shape, so a wrong file
fails with one clear ``DataError`` instead of a shape error deep inside a simulation.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

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


def load_dataset(path: str | os.PathLike[str], input_shape: tuple[int, ...] | None = None,
                 limit: int | None = None) -> Dataset:
    """Load a data file; with ``input_shape`` check (and if needed reshape) the samples to it."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such data file")
    try:
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
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{p}: not a readable .npz/.npy file ({e})") from None
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataError(f"{p}: 'x' holds no samples")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{p}: 'x' is not real-valued (dtype {x.dtype})")
    if y is not None:
        if y.shape != (x.shape[0],):
            raise DataError(f"{p}: 'y' must have shape ({x.shape[0]},), got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{p}: 'y' must hold integer class labels, got dtype {y.dtype}")
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
