"""Peak resident memory of one stage of a benchmark, on Linux: ``reset_peak()`` sets the kernel's
high-water mark (VmHWM) to the current RSS (through /proc/self/clear_refs); ``rss()`` and
``peak()`` read VmRSS and VmHWM in bytes."""

from __future__ import annotations


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status (this benchmark needs Linux)")


def reset_peak() -> None:
    """From now on ``peak()`` is the peak since this call."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rss() -> int:
    return _status_bytes("VmRSS")


def peak() -> int:
    return _status_bytes("VmHWM")
