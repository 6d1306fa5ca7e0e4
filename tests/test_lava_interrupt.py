"""Ctrl-C (and SIGTERM) during ``onnx2snn evaluate OUT/ --backend lava`` stops Lava cleanly.

A real run in a subprocess of its own session: once the first image is through (Lava's OS
processes are up and stepping), the signal goes to the whole process group, as a terminal sends
Ctrl-C. Expected: exit 130 (SIGINT) or 143 (SIGTERM) within seconds, one line on stderr and no
traceback, no result printed, and none of the processes Lava forked left alive.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from onnx2snn.cli.main import main

pytest.importorskip("lava")

ROOT = Path(__file__).resolve().parents[1]
EXIT_WITHIN_S = 20


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    kids, found, todo = _children(), set(), [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            found.add(k)
            todo.append(k)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lava_interrupt") / "mlp"
    r = CliRunner().invoke(main, ["convert", str(ROOT / "models/digits_mlp.onnx"), "--target",
                                  "loihi", "--calib", str(ROOT / "models/digits_calib.npz"),
                                  "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_lava_evaluate_stops_everything(converted: Path, signum: int,
                                                      code: int) -> None:
    cmd = [sys.executable, "-m", "onnx2snn", "evaluate", str(converted), "--backend", "lava",
           "--data", str(ROOT / "models/digits_test.npz"), "-T", "64", "--limit", "300"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read1(4096),
                                                             b"")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180  # a loaded 2-core machine compiles slowly
        while b" 1/300" not in b"".join(err):  # the progress bar: one image is through
            assert proc.poll() is None, b"".join(err).decode(errors="replace")
            assert time.monotonic() < deadline, "Lava did not get through one image"
            time.sleep(0.1)
        forked = descendants(proc.pid)
        assert len(forked) >= 3, "Lava's OS processes are not there"
        sent = time.monotonic()
        os.killpg(proc.pid, signum)  # the whole group, as a terminal does on Ctrl-C
        try:
            proc.wait(timeout=EXIT_WITHIN_S)  # stderr: the reader's; stdout: small, read below
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_WITHIN_S} s after the signal")
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:  # failed: kill all but the resource tracker, which then unlinks
            for p in descendants(proc.pid):  # the shared memory the killed ones leave behind
                with contextlib.suppress(OSError):
                    if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes():
                        os.kill(p, signal.SIGKILL)
            proc.kill()
            proc.wait()
    reader.join(5)
    out = proc.stdout.read()
    stderr = b"".join(err).decode(errors="replace")
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    lines = [s.strip() for s in stderr.replace("\r", "\n").splitlines() if s.strip()]
    assert lines[-1] == "onnx2snn: interrupted: Lava runtime stopped", stderr
    assert not [s for s in lines if not s.startswith("simulating")][:-1], stderr
    assert out == b""  # nothing half-way: the table is printed only when complete
    end = time.monotonic() + 5  # the resource tracker leaves once the last pipe end is closed
    while [p for p in forked if alive(p)] and time.monotonic() < end:
        time.sleep(0.1)
    assert not [p for p in forked if alive(p)], f"left behind after {took:.1f} s"
