"""OpenBLAS's idle threads: told to sleep at once, before NumPy loads OpenBLAS.

OpenBLAS, behind NumPy's matrix products, keeps each thread that has done its part of a
product spinning (calling ``sched_yield``) for 2^28 CPU cycles, about 0.1 s, in case another
product follows (its ``THREAD_TIMEOUT``). In the simulator a matrix product (a pointwise
convolution, ``backends.numpy.kernels.pointwise_kernel``) is followed by onnxruntime's
convolutions and NumPy's neuron update, and the spinning threads take the cores those need. On
the CIFAR-size ResNet-18 (T = 32, 16 images, 2 cores) this cost 9.2-9.6 ms per image·step
against 6.4-6.7 with the timeout at its least, 2^4 cycles, and 2.3-3.4 s of system time
against 0.05 s per 5 s run (docs/performance.md).

OpenBLAS reads the timeout from the environment variable ``OPENBLAS_THREAD_TIMEOUT`` (log2 of
the cycles) once, when it is loaded, and has no call to change it later. ``quiet_idle_threads``,
called when the package is imported, sets it to 4 if NumPy is not loaded yet and the user has
not set it; processes started later (evaluate's workers, a local Ray cluster, Lava's processes)
inherit it. A program that imports NumPy before onnx2snn keeps OpenBLAS's default unless it sets
the variable itself. The setting holds for the whole process: the program's own NumPy products
then also let their threads sleep at once (a thread wakes for the next product instead of
spinning); setting the variable before importing onnx2snn chooses otherwise. The timeout changes
only how threads wait, never which thread computes what, so results keep their bits.
"""

from __future__ import annotations

import os
import sys

TIMEOUT_ENV = "OPENBLAS_THREAD_TIMEOUT"
QUIET_TIMEOUT = 4  # log2 of the cycles an idle thread spins; OpenBLAS's least


def quiet_idle_threads() -> bool:
    """Set ``OPENBLAS_THREAD_TIMEOUT`` to ``QUIET_TIMEOUT`` unless it is set or NumPy is loaded.

    Returns True if it set the variable now.
    """
    if "numpy" in sys.modules or TIMEOUT_ENV in os.environ:
        return False
    os.environ[TIMEOUT_ENV] = str(QUIET_TIMEOUT)
    return True


def thread_timeout() -> int | None:
    """The thread timeout NumPy's OpenBLAS runs with (log2 of cycles; its default is 28), or None
    when NumPy's BLAS is not OpenBLAS or does not say."""
    import ctypes

    from threadpoolctl import threadpool_info

    for info in threadpool_info():
        if info.get("internal_api") != "openblas":
            continue
        try:
            value = int(ctypes.CDLL(info["filepath"]).openblas_thread_timeout())
        except (OSError, AttributeError):
            return None
        return value if value > 0 else 28  # 0: not set, OpenBLAS's compiled-in default
    return None


__all__ = ["QUIET_TIMEOUT", "TIMEOUT_ENV", "quiet_idle_threads", "thread_timeout"]
