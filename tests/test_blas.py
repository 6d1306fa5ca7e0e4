"""onnx2snn.blas: OpenBLAS's idle threads are told to sleep when onnx2snn is imported first."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from onnx2snn.blas import QUIET_TIMEOUT, TIMEOUT_ENV


def _timeout_in_fresh_python(code: str, env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != TIMEOUT_ENV}
    if env_value is not None:
        env[TIMEOUT_ENV] = env_value
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


REPORT = "from onnx2snn.blas import thread_timeout; print(thread_timeout())"


@pytest.fixture(scope="module")
def openblas() -> None:
    from onnx2snn.blas import thread_timeout

    if thread_timeout() is None:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS that reports its thread timeout")


def test_importing_onnx2snn_first_sets_the_least_timeout(openblas: None) -> None:
    got = _timeout_in_fresh_python(f"import onnx2snn, numpy; {REPORT}", None)
    assert got == str(QUIET_TIMEOUT)


def test_numpy_first_keeps_openblas_default_and_the_environment_untouched(openblas: None) -> None:
    code = f"import numpy, os, onnx2snn; {REPORT}; print(os.environ.get({TIMEOUT_ENV!r}))"
    assert _timeout_in_fresh_python(code, None).split() == ["28", "None"]


def test_a_timeout_the_user_set_is_kept(openblas: None) -> None:
    assert _timeout_in_fresh_python(f"import onnx2snn, numpy; {REPORT}", "12") == "12"


def test_the_cli_sets_it_for_its_processes() -> None:
    code = ("import os, sys; sys.argv = ['onnx2snn', '--help']\n"
            "import onnx2snn.cli.main\n"
            f"print(os.environ[{TIMEOUT_ENV!r}])")
    assert _timeout_in_fresh_python(code, None) == str(QUIET_TIMEOUT)
