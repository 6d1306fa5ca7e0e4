"""Calibration: the scale λ of every ReLU layer, from the ANN's activations on calibration data.

The ANN graph is run with the frontend's NumPy executor (which matches onnxruntime), in batches,
keeping the output of every ``Relu`` node. Per layer it records the maximum and a bounded random
sample of the positive activations (all of them for small nets), from which λ follows by the
recipe: the maximum, the p-th percentile of the layer, or one percentile per channel. A ReLU with
a ceiling c (Clip(0, c), ReLU6) bounds it: λ = min(c, statistic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnx2snn.ann_executor import run_ann
from onnx2snn.convert.recipe import Recipe
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Relu

SAMPLE_CAP = 1_000_000  # positive activations kept per layer (per channel: cap / C)


@dataclass
class LayerStats:
    """Activation statistics of one ReLU layer; ``lam`` is (C,) or a scalar array."""

    name: str
    maximum: float
    channel_max: np.ndarray
    positives: list[np.ndarray]  # per channel, a bounded sample of positive activations
    mean: np.ndarray  # per-channel mean activation over the calibration data
    lam: np.ndarray | None = None
    source: str = ""

    def summary(self) -> dict[str, object]:
        """JSON-friendly summary stored in the SNN graph's metadata."""
        lam = np.atleast_1d(self.lam if self.lam is not None else np.nan)
        return {"max": self.maximum, "lambda": lam.tolist() if lam.size <= 64 else
                [float(lam.min()), float(lam.max())], "lambda_source": self.source,
                "mean": float(self.mean.mean())}


def collect_stats(ann: Graph, x: np.ndarray, batch_size: int = 256, seed: int = 0,
                  progress: Callable[[int], None] | None = None) -> dict[str, LayerStats]:
    """Run the ANN on ``x`` and gather per-ReLU statistics (max, positive samples, means)."""
    relus = [n.name for n in ann.nodes if isinstance(n, Relu)]
    rng = np.random.default_rng(seed)
    maxima: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    samples: dict[str, list[list[np.ndarray]]] = {}
    count = 0
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        acts = run_ann(ann, batch, keep=relus)
        for name in relus:
            a = acts[name]
            c = a.shape[1]
            per_channel = np.moveaxis(a, 1, 0).reshape(c, -1)
            maxima[name] = np.maximum(maxima.get(name, np.zeros(c)), per_channel.max(axis=1))
            sums[name] = sums.get(name, np.zeros(c)) + per_channel.sum(axis=1) / max(
                per_channel.shape[1] // len(batch), 1)
            cap = max(SAMPLE_CAP // c, 1000)
            bucket = samples.setdefault(name, [[] for _ in range(c)])
            for ch in range(c):
                pos = per_channel[ch][per_channel[ch] > 0]
                if pos.size > cap:
                    pos = rng.choice(pos, cap, replace=False)
                bucket[ch].append(pos.astype(np.float32))
        count += len(batch)
        if progress is not None:
            progress(len(batch))
    out = {}
    for name in relus:
        pos = [np.concatenate(b) if b else np.zeros(0, np.float32) for b in samples[name]]
        out[name] = LayerStats(name, float(maxima[name].max()), maxima[name], pos,
                               sums[name] / max(count, 1))
    return out


def choose_scales(ann: Graph, stats: dict[str, LayerStats], recipe: Recipe) -> dict[str, LayerStats]:
    """Fill in λ of every layer following the recipe (modifies and returns ``stats``).

    A ReLU with a ceiling c (Clip(0, c), ReLU6) bounds λ; it is not λ: λ = min(c, statistic)
    per layer or channel. A layer whose activations stay far below its ceiling (a ReLU6 layer
    whose 99.9th percentile is 1) would otherwise integrate c/1 times slower than it needs to.
    """
    for name, st in stats.items():
        if recipe.norm == "max":
            lam, source = np.array(st.maximum), "max"
        elif recipe.norm == "percentile":
            allpos = np.concatenate(st.positives)
            value = float(np.percentile(allpos, recipe.percentile)) if allpos.size else 0.0
            lam, source = np.array(value), f"p{recipe.percentile:g}"
        else:
            vals = [float(np.percentile(p, recipe.percentile)) if p.size else 0.0
                    for p in st.positives]
            lam, source = np.array(vals), f"channel p{recipe.percentile:g}"
        lam = _positive(lam)
        ceiling = getattr(ann[name], "ceiling", None)
        if recipe.use_ceiling and ceiling is not None:
            at_ceiling = np.isclose(lam, ceiling, rtol=1e-6) | (lam > ceiling)
            if np.all(at_ceiling):
                source = "ceiling"
            elif np.any(at_ceiling):
                source += f", ceiling {ceiling:g} on some channels"
            else:
                source += f" (< ceiling {ceiling:g})"
            lam = np.where(at_ceiling, float(ceiling), lam)
        st.lam, st.source = lam, source
    return stats


def _positive(lam: np.ndarray) -> np.ndarray:
    """Replace λ = 0 (a layer or channel that never fired) by a harmless positive value."""
    lam = np.asarray(lam, dtype=np.float64)
    if lam.ndim == 0:
        return lam if lam > 0 else np.array(1.0)
    fallback = lam[lam > 0].max() if np.any(lam > 0) else 1.0
    return np.where(lam > 0, lam, fallback)
