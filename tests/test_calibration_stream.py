"""Calibration statistics that stream: equal to statistics of all activations while they fit,
a bounded uniform sample beyond, and independent of how the data is batched.

The reference is computed here from ``run_ann`` keeping every ReLU output of the whole data set
at once (what calibration held before it streamed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnx2snn.ann_executor import run_ann
from onnx2snn.convert import calibrate
from onnx2snn.convert.calibrate import collect_stats
from onnx2snn.errors import BackendError
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.ir.nodes import Relu

MODELS = Path(__file__).resolve().parents[1] / "models"
X = np.load(MODELS / "digits_train.npz")["x"][:300]


@pytest.fixture(scope="module")
def ann():
    return onnx_to_ann(MODELS / "digits_cnn.onnx")


def all_positives(act: np.ndarray) -> list[np.ndarray]:
    c = act.shape[1]
    per_channel = np.moveaxis(act, 1, 0).reshape(c, -1)
    return [row[row > 0] for row in per_channel]


def test_statistics_are_those_of_all_activations(ann) -> None:
    relus = [n.name for n in ann.nodes if isinstance(n, Relu)]
    acts = run_ann(ann, X, keep=relus)
    for batch_size in (300, 7):
        stats = collect_stats(ann, X, batch_size=batch_size)
        for name in relus:
            ref = all_positives(acts[name])
            got = stats[name].positives
            for r, g in zip(ref, got, strict=True):  # the same values (order of batches)
                np.testing.assert_array_equal(np.sort(g), np.sort(r.astype(np.float32)))
            c = acts[name].shape[1]
            per_channel = np.moveaxis(acts[name], 1, 0).reshape(c, -1)
            np.testing.assert_array_equal(stats[name].channel_max, per_channel.max(axis=1))
            per_sample = per_channel.shape[1] // len(X)
            np.testing.assert_allclose(stats[name].mean,
                                       per_channel.sum(axis=1) / per_sample / len(X), rtol=1e-12)


def test_memory_budget_cuts_batches_not_results(ann) -> None:
    whole = collect_stats(ann, X, batch_size=300, memory="64GB")
    fixed = calibrate.calibration_memory(ann, np.float64)[0]
    with pytest.raises(BackendError, match="too small to calibrate"):
        collect_stats(ann, X, memory=fixed)

    def batch_at(memory: int) -> int:
        try:
            return calibrate.calibration_batch(ann, np.float64, memory, 300)
        except BackendError:
            return 0

    budget = next(m for m in range(fixed, fixed + 2**30, 2**16) if batch_at(m) > 1)
    assert batch_at(budget) < 300
    small = collect_stats(ann, X, batch_size=300, memory=budget)
    for name in whole:
        np.testing.assert_array_equal(whole[name].channel_max, small[name].channel_max)
        for a, b in zip(whole[name].positives, small[name].positives, strict=True):
            np.testing.assert_array_equal(np.sort(a), np.sort(b))


def test_sample_is_bounded_and_uniform(ann, monkeypatch) -> None:
    monkeypatch.setattr(calibrate, "SAMPLE_CAP", 4000)
    relus = [n.name for n in ann.nodes if isinstance(n, Relu)]
    acts = run_ann(ann, X, keep=relus)
    stats = collect_stats(ann, X, batch_size=50)
    for name in relus:
        c = acts[name].shape[1]
        per_sample = int(np.prod(acts[name].shape[2:])) if acts[name].ndim > 2 else 1
        positions = max(4000 // c, 1000)
        kept = [p.size for p in stats[name].positives]
        ref = all_positives(acts[name])
        if per_sample * len(X) <= positions:
            assert kept == [r.size for r in ref]
            continue
        # every batch gives the same fraction of its positions: about `positions` in all
        assert max(kept) <= positions * 1.05
        allpos = np.concatenate(ref)
        sample = np.concatenate(stats[name].positives)
        p_ref, p_got = np.percentile(allpos, 99), np.percentile(sample, 99)
        assert abs(p_got - p_ref) <= 0.1 * p_ref, (name, p_got, p_ref)


def test_relu_and_add_in_place_give_the_statistics_of_the_executor() -> None:
    """digits_resnet: ReLUs after convolutions and residual Adds run in place; the statistics
    equal those of the executor's own forward, and the caller's data is left untouched."""
    ann = onnx_to_ann(MODELS / "digits_resnet.onnx")
    in_place = calibrate.in_place_kernels(ann)
    kinds = {ann[name].kind for name in in_place}
    assert kinds == {"relu", "add"}, kinds
    x = X[:100].reshape(-1, *ann[ann.inputs[0]].shape).copy()
    before = x.copy()
    relus = [n.name for n in ann.nodes if isinstance(n, Relu)]
    acts = run_ann(ann, x, keep=relus)
    stats = collect_stats(ann, x, batch_size=30)
    np.testing.assert_array_equal(x, before)
    for name in relus:
        for r, g in zip(all_positives(acts[name]), stats[name].positives, strict=True):
            np.testing.assert_array_equal(np.sort(g), np.sort(r.astype(np.float32)))


def test_memory_estimate_grows_with_the_batch_and_counts_the_statistics(ann) -> None:
    fixed, per_sample = calibrate.calibration_memory(ann, np.float32)
    relus = sum(1 for n in ann.nodes if isinstance(n, Relu))
    assert fixed >= calibrate.RUNTIME_OVERHEAD + relus * calibrate.SAMPLE_CAP * 4
    assert per_sample > 0
    b = calibrate.calibration_batch(ann, np.float32, fixed + 10 * per_sample, 300)
    assert b == 10
    calibrate.release_freed_memory()  # a no-op where the C library has no malloc_trim
