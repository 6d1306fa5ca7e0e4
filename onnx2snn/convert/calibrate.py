"""Calibration: the scale λ of every ReLU layer, from the ANN's activations on calibration data.

The ANN graph is run with the frontend's NumPy executor (which matches onnxruntime), its Dense
and Conv layers through onnxruntime sessions, in batches sized to a memory budget. Every
``Relu`` output is turned into statistics as soon as it is computed and then freed, so memory
holds one batch's live activations plus bounded statistics, whatever the number of images:
per channel the maximum, the sum (for the mean) and the positive activations at a uniform
sample of at most max(``SAMPLE_CAP`` / C, 1000) of the layer's positions (sample, row, column),
every batch contributing the same fraction of its positions. When the data set has no more
positions than that, all activations are kept, so on small networks and data sets the
percentiles are those of all activations. λ follows by the recipe: the maximum, the p-th
percentile of the layer, or one percentile per channel. A ReLU with a ceiling c (Clip(0, c),
ReLU6) bounds it: λ = min(c, statistic).

Precision: networks of at most ``FLOAT64_MACS`` multiply-accumulates per sample are run in
float64 (Conv then in NumPy: onnxruntime has no float64 Conv); larger ones in float32, where
onnxruntime's kernels are several times faster. Activations then differ by float32 rounding
(relative 1e-7), and so do the maxima and percentiles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnx2snn.ann_executor import run_ann
from onnx2snn.backends.numpy.kernels import synapse_kernels
from onnx2snn.backends.numpy.memory import default_memory, footprint, parse_memory
from onnx2snn.convert.recipe import Recipe
from onnx2snn.errors import BackendError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Relu

SAMPLE_CAP = 2_000_000  # activations sampled per layer: positions × channels (≥ 1000 positions)
FLOAT64_MACS = 100_000_000  # larger networks are calibrated in float32


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


class _LayerSample:
    """Per-channel maximum and sum, and a uniform sample of positions of one layer.

    ``positions`` of the layer's ``total`` positions (sample × height × width) are kept; while
    they cover all positions every activation is kept, otherwise each batch contributes the
    same fraction of its positions, drawn without replacement (a uniform sample of the data set,
    stratified by batch).
    """

    def __init__(self, channels: int, per_sample: int, samples: int) -> None:
        self.maxima = np.zeros(channels)
        self.sums = np.zeros(channels)
        cap = max(SAMPLE_CAP // channels, 1000)
        self.rate = min(1.0, cap / max(per_sample * samples, 1))
        self.channels = channels
        self.kept: list[np.ndarray] = []  # (C, positions) per batch

    def add(self, act: np.ndarray, rng: np.random.Generator) -> None:
        """Fold in one batch of activations (B, C, ...)."""
        b, c = act.shape[:2]
        if self.rate >= 1.0:  # every activation is kept: one (C, B·H·W) copy
            per_channel = np.moveaxis(act, 1, 0).reshape(c, -1)
            self.maxima = np.maximum(self.maxima, per_channel.max(axis=1))
            self.sums += per_channel.sum(axis=1) / max(per_channel.shape[1] // b, 1)
        else:  # large layers: reduce in place, gather the sampled positions only
            flat = act.reshape(b, c, -1)
            self.maxima = np.maximum(self.maxima, flat.max(axis=2).max(axis=0))
            self.sums += flat.sum(axis=2, dtype=np.float64).sum(axis=0) / flat.shape[2]
            n = b * flat.shape[2]
            pick = np.sort(rng.choice(n, min(n, max(1, round(self.rate * n))), replace=False))
            per_channel = flat[pick // flat.shape[2], :, pick % flat.shape[2]].T
        self.kept.append(per_channel.astype(np.float32))  # zeros dropped in positives()

    def positives(self) -> list[np.ndarray]:
        """Per channel, the positive activations at the sampled positions."""
        if not self.kept:
            return [np.zeros(0, np.float32) for _ in range(self.channels)]
        every = np.concatenate(self.kept, axis=1)
        return [row[row > 0] for row in every]


def calibration_batch(ann: Graph, dtype: type, memory: int, batch_size: int) -> int:
    """Samples per batch that keep the executor's activations and the statistics in ``memory``.

    Fixed: the parameters and kernel scratch (``memory.footprint``) and the samples, at most
    ``SAMPLE_CAP`` float32 values per ReLU layer (plus C·1000 for layers of many channels).
    Per sample: the live activations and, for the layer being folded in, a copy and a mask.
    """
    fp = footprint(ann, np.dtype(dtype).itemsize, ())
    relus = [n for n in ann.nodes if isinstance(n, Relu)]
    samples = sum(max(SAMPLE_CAP, 1000 * (n.shape[0] if n.shape else 1)) for n in relus) * 4
    largest = max(int(np.prod(n.shape)) for n in ann.nodes)
    per_sample = fp.work + 2 * largest * np.dtype(dtype).itemsize + largest
    room = memory - fp.fixed - samples
    if room < per_sample:
        raise BackendError(f"the memory budget of {memory / 2**20:.0f} MiB is too small to "
                           f"calibrate this network: one image needs about "
                           f"{(fp.fixed + samples + per_sample) / 2**20:.0f} MiB; give more memory")
    return int(max(1, min(batch_size, room // per_sample)))


def collect_stats(ann: Graph, x: np.ndarray, batch_size: int = 256, seed: int = 0,
                  progress: Callable[[int], None] | None = None,
                  memory: int | str | None = None,
                  dtype: type | None = None) -> dict[str, LayerStats]:
    """Run the ANN on ``x`` and gather per-ReLU statistics (max, positive samples, means).

    ``batch_size`` is an upper bound: batches are cut smaller to fit ``memory`` (bytes or text
    such as "4GB"; default ``default_memory()``). ``dtype`` None chooses by size (see above).
    """
    relus = [n.name for n in ann.nodes if isinstance(n, Relu)]
    if dtype is None:
        dtype = np.float64 if ann.macs() <= FLOAT64_MACS else np.float32
    budget = default_memory() if memory is None else parse_memory(memory)
    step = calibration_batch(ann, dtype, budget, batch_size)
    kernels = synapse_kernels(ann, dtype)
    rng = np.random.default_rng(seed)
    stats: dict[str, _LayerSample] = {}

    def visit(name: str, act: np.ndarray) -> None:
        if name not in stats:
            per_sample = int(np.prod(act.shape[2:])) if act.ndim > 2 else 1
            stats[name] = _LayerSample(act.shape[1], per_sample, len(x))
        stats[name].add(act, rng)

    count = 0
    for start in range(0, len(x), step):
        batch = x[start:start + step]
        run_ann(ann, batch, keep=relus, visit=visit, dtype=dtype, kernels=kernels)
        count += len(batch)
        if progress is not None:
            progress(len(batch))
    return {name: LayerStats(name, float(stats[name].maxima.max()), stats[name].maxima,
                             stats[name].positives(), stats[name].sums / max(count, 1))
            for name in relus}


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
