"""Fuzzing the command line with malformed models and data files: never an internal error.

Drives the harness of ``tools/fuzz_inputs.py`` (the long run lives there) from hypothesis, with a
fixed, derandomized budget: every mutated input runs ``inspect``, ``convert``, ``evaluate`` and
``emit`` in a forked child, which must end with a documented exit code (never 1, "internal error"),
must not crash or hang, and must leave no file besides the outputs of the commands that succeeded.
The control test checks that the unmutated seeds convert, so the fuzz cases start from models
that reach every stage.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

T = TypeVar("T")
TOOL = Path(__file__).resolve().parents[1] / "tools" / "fuzz_inputs.py"
TIMEOUT = 60.0  # seconds before a case counts as a hang


def _load_tool() -> ModuleType:
    if not TOOL.exists():
        pytest.skip("no tools/ folder (tests run from an installed wheel)")
    spec = importlib.util.spec_from_file_location("fuzz_inputs", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_inputs"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


fuzz = _load_tool()
SEEDS = fuzz.seed_models()


class HypothesisChooser:
    """The harness's choices drawn by hypothesis (so failing inputs shrink)."""

    def __init__(self, data: Any):
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return int(self.data.draw(st.integers(low, high)))

    def choice(self, options: Sequence[T]) -> T:
        if not options:
            raise IndexError("nothing to choose from")
        return options[self.data.draw(st.integers(0, len(options) - 1))]


@pytest.fixture(scope="module", autouse=True)
def warm_parent() -> None:
    fuzz.prepare_parent()


@pytest.mark.slow
def test_every_command_succeeds_on_the_unmutated_seeds() -> None:
    assert fuzz.control_failures(SEEDS, TIMEOUT) == []


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_no_internal_error_crash_hang_or_stray_file(data: Any) -> None:
    case = fuzz.make_case(HypothesisChooser(data), SEEDS)
    report = fuzz.run_case(case, TIMEOUT)
    assert fuzz.problems_of(report) == [], (case.seed, case.steps, report)
    # every command that ran ended with a documented exit code
    for name, r in report["commands"].items():
        assert r["code"] in (0, 2, 3, 4), (name, r, case.steps)


def test_the_harness_sees_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle is not blind: a simulated bug in inspect is reported as an internal error."""
    import onnx2snn.inspect

    def boom(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(onnx2snn.inspect, "inspect_model", boom)
    case = fuzz.seed_cases(SEEDS)[0]
    report = fuzz.run_case(case, TIMEOUT)  # the child inherits the patched function
    assert any(p.startswith("internal error in inspect") for p in fuzz.problems_of(report))


def test_the_harness_sees_a_stray_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that writes beside its output folder is caught (here: a simulated leak)."""
    from onnx2snn.backends.numpy import NumpyBackend

    real_emit = NumpyBackend.emit

    def leaky_emit(self: Any, graph: Any, out_dir: Path, **options: Any) -> Any:
        (out_dir.parent / "leak.txt").write_text("written outside OUT/")
        return real_emit(self, graph, out_dir, **options)

    monkeypatch.setattr(NumpyBackend, "emit", leaky_emit)
    report = fuzz.run_case(fuzz.seed_cases(SEEDS)[0], TIMEOUT)
    assert "stray files: ['leak.txt']" in fuzz.problems_of(report)
