"""Progress bars for long work (calibration, simulation), on stderr, off when not wanted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True,
                 unit: str = "sample") -> Iterator[Callable[[int], None]]:
    """Yield an ``update(n)`` callable driving a tqdm bar (a no-op when ``enabled`` is false)."""
    if not enabled:
        yield lambda n: None
        return
    with tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True) as bar:
        yield bar.update
