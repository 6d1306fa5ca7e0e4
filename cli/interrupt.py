"""Ctrl-C and SIGTERM during a long command: one line on stderr, no traceback, exit 128 + signal.

``exits_on_interrupt`` wraps a command body: while it runs SIGTERM raises ``Terminated`` (a
``KeyboardInterrupt``), so the library cleans up the same way for both (the Lava network stops its
runtime and ends its OS processes, ``onnx2snn.backends.loihi.lifecycle``); then the command prints
``onnx2snn: interrupted[: what was done]`` and exits 130 (SIGINT) or 143 (SIGTERM), the codes a
shell gives a process killed by that signal. Nothing else is written: commands print their results
only once they are complete.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import click

from onnx2snn.cli.common import PROG

F = TypeVar("F", bound=Callable[..., Any])


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like a Ctrl-C so that every ``finally`` and ``__exit__`` runs."""

    signum = signal.SIGTERM


def _raise_terminated(_signum: int, _frame: Any) -> None:
    raise Terminated()


def exits_on_interrupt(f: F) -> F:
    """Decorate a click command's function; see the module doc."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGTERM, _raise_terminated) if main else None
        try:
            return f(*args, **kwargs)
        except KeyboardInterrupt as e:
            text = str(e)
            click.echo(f"{PROG}: interrupted" + (f": {text}" if text else ""), err=True)
            click.get_current_context().exit(128 + int(getattr(e, "signum", signal.SIGINT)))
        finally:
            if old is not None:
                signal.signal(signal.SIGTERM, old)

    return wrapper  # type: ignore[return-value]


__all__ = ["Terminated", "exits_on_interrupt"]
