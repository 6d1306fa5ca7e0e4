"""Start and stop Lava's runtime so that Ctrl-C and SIGTERM leave nothing behind.

Lava 0.10.0 (``MultiProcessing`` message infrastructure) forks one OS process per process model,
one per runtime service and a shared-memory manager server, all in the terminal's process group:
a Ctrl-C reaches every one of them. Left alone, each child dies of its own ``KeyboardInterrupt``
with a traceback, the parent's ``Runtime.stop()`` then waits forever for a runtime service that is
gone (or reads half an answer and raises), and at exit ``multiprocessing`` joins children that
never end (measured: exit 1 with a traceback per process, or a hang, or a SIGSEGV at exit).

Therefore:

* ``LavaStartGuard`` (around the runtime's creation, where the forks happen): every process forked
  ignores SIGINT and SIGTERM (only the parent decides when Lava stops) and, on Linux, is killed
  when the parent dies (``PR_SET_PDEATHSIG``), so not even a SIGKILLed parent leaves orphans. The
  parent holds SIGINT/SIGTERM until the forks are done and raises them afterwards (an interrupt
  inside ``logging``'s fork hook leaves its lock held, and the next log call hangs). The guard
  remembers which ``multiprocessing`` children existed before, so only Lava's are ever killed.
* ``shutdown_runtime``: after a normal run, Lava's own ``Runtime.stop()`` (STOP to the runtime
  services, wait for TERMINATED, join everything) in a helper thread, for at most ``timeout``
  seconds. After an interrupt, or when that fails, hangs or a second Ctrl-C comes, the processes
  are killed at once, the channels joined and the shared-memory server shut down (it unlinks the
  segments): the parent may have been interrupted half-way through a message exchange (the
  runtime service then blocks sending the rest of a variable into a full channel, and ``stop()``
  waits forever). Signals arriving meanwhile are held and returned.
* ``LavaInterrupted``: the ``KeyboardInterrupt`` a ``LavaNetwork`` raises once it has stopped the
  runtime after an interrupt (its text says so; ``signum`` is the signal that caused it).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

STOP_TIMEOUT_S = 5.0
_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1

# read in the child, as it was at fork time
_child_setup = {"active": False, "die_with_parent": False, "parent": 0}


class LavaInterrupted(KeyboardInterrupt):
    """An interrupt (Ctrl-C, or SIGTERM turned into one) after which the Lava runtime was stopped."""

    def __init__(self, message: str = "Lava runtime stopped", signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


def _in_forked_child() -> None:
    if not _child_setup["active"]:
        return
    for s in _HELD_SIGNALS:
        with contextlib.suppress(ValueError):  # the forking thread is the child's main thread
            signal.signal(s, signal.SIG_IGN)
    if not _child_setup["die_with_parent"]:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's shutdown still kills the children
        return
    if os.getppid() != _child_setup["parent"]:  # the parent died before prctl took effect
        os._exit(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_forked_child)


class HeldInterrupt(KeyboardInterrupt):
    """A SIGINT or SIGTERM that arrived while Lava's processes were being forked, raised after."""

    def __init__(self, signum: int):
        super().__init__()
        self.signum = signum


@contextlib.contextmanager
def _held_signals(hurry: threading.Event | None = None) -> Iterator[list[int]]:
    """While the body runs, SIGINT/SIGTERM are only listed (and set ``hurry``); main thread only."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def hold(signum: int, _frame: Any) -> None:
        got.append(signum)
        if hurry is not None:
            hurry.set()

    old = {s: signal.signal(s, hold) for s in _HELD_SIGNALS}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class LavaStartGuard:
    """Context manager around the creation of a Lava runtime (the forks of its OS processes).

    Children forked inside ignore SIGINT/SIGTERM and die with the parent (see the module doc);
    the parent holds SIGINT/SIGTERM until the forks are done (an interrupt inside the fork hooks of
    ``logging`` would leave its lock held, and the next log call would hang) and raises them as
    ``HeldInterrupt`` afterwards. ``children()``: the ``multiprocessing`` children started since.
    """

    def __init__(self) -> None:
        self.before = {p.pid for p in multiprocessing.active_children()}
        self._hold: contextlib.ExitStack | None = None
        self._got: list[int] = []

    def __enter__(self) -> LavaStartGuard:
        # PR_SET_PDEATHSIG fires when the forking *thread* ends: only when forking from main
        _child_setup.update(active=True, parent=os.getpid(), die_with_parent=threading.current_thread()
                            is threading.main_thread())
        self._hold = contextlib.ExitStack()
        self._got = self._hold.enter_context(_held_signals())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        _child_setup["active"] = False
        if self._hold is not None:
            self._hold.close()
        if self._got and exc_type is None:
            raise HeldInterrupt(self._got[0])

    def children(self) -> list[Any]:
        """The ``multiprocessing`` children started since the guard was made, still running."""
        return [p for p in multiprocessing.active_children() if p.pid not in self.before]


def _kill(process: Any) -> None:
    with contextlib.suppress(Exception):
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        process.join()


def _force_stop(runtime: Any, guard: LavaStartGuard | None) -> None:
    """Kill Lava's OS processes and release what the parent holds; never raises."""
    infra = getattr(runtime, "_messaging_infrastructure", None)
    for actor in list(getattr(infra, "actors", None) or []):
        _kill(actor)
    for port in list(getattr(runtime, "_open_ports", None) or []):
        with contextlib.suppress(Exception):
            port.join()  # ends the port's daemon thread before the shared memory goes away
    with contextlib.suppress(Exception):
        runtime._open_ports.clear()
    smm = getattr(infra, "_smm", None)
    if smm is not None:
        with contextlib.suppress(Exception):
            smm.shutdown()  # the manager's server unlinks the shared memory
    with contextlib.suppress(Exception):
        runtime._watchdog_manager.stop()
    for child in guard.children() if guard is not None else []:
        _kill(child)  # e.g. forked but not yet listed as an actor when the interrupt came
    runtime._is_started = False  # Runtime.__del__ would call stop() again, and wait forever
    runtime._is_running = False


def shutdown_runtime(runtime: Any, guard: LavaStartGuard | None = None, *, graceful: bool = True,
                     timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """Stop ``runtime`` and end its OS processes; see the module doc.

    ``graceful``: first Lava's own ``stop()``, for at most ``timeout`` seconds. Without it (after
    an interrupt: the parent may have been stopped half-way through a message exchange, and the
    runtime service be blocked sending into a full channel) the processes are killed at once.
    Returns the signals (SIGINT, SIGTERM) that arrived meanwhile, for the caller to act on.
    """
    hurry = threading.Event()
    with _held_signals(hurry) as got:
        stopped = False
        if graceful and getattr(runtime, "_is_started", False):
            error: list[BaseException] = []

            def stop() -> None:
                try:
                    runtime.stop()
                except BaseException as e:  # reported through `error`
                    error.append(e)

            helper = threading.Thread(target=stop, name="lava-stop", daemon=True)
            helper.start()
            deadline = time.monotonic() + timeout
            while helper.is_alive() and not hurry.is_set() and time.monotonic() < deadline:
                helper.join(0.02)
            stopped = not helper.is_alive() and not error
        if not stopped:
            _force_stop(runtime, guard)
        elif guard is not None:
            for child in guard.children():
                _kill(child)
    return got


__all__ = ["STOP_TIMEOUT_S", "HeldInterrupt", "LavaInterrupted", "LavaStartGuard",
           "shutdown_runtime"]
