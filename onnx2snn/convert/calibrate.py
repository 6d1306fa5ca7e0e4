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

Memory: the budget bounds what calibration adds to the process (``calibration_memory``); a
ReLU or Add whose input nothing else reads is computed in place (``in_place_kernels``), and the
heap is handed back to the system after every batch (``release_freed_memory``), without which
glibc's free lists made the resident size ratchet past any budget.

Precision: networks of at most ``FLOAT64_MACS`` multiply-accumulates per sample are run in
float64 (Conv then in NumPy: onnxruntime has no float64 Conv); larger ones in float32, where
onnxruntime's kernels are several times faster. Activations then differ by float32 rounding
(relative 1e-7), and so do the maxima and percentiles.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnx2snn.ann_executor import run_ann
from onnx2snn.backends.numpy.kernels import synapse_kernels
from onnx2snn.backends.numpy.memory import default_memory, footprint, parse_memory
from onnx2snn.convert.recipe import Recipe
from onnx2snn.errors import BackendError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Add, Conv, Dense, Relu
from onnx2snn.numerics import _COL_BUDGET

SAMPLE_CAP = 2_000_000  # activations sampled per layer: positions × channels (≥ 1000 positions)
FLOAT64_MACS = 100_000_000  # larger networks are calibrated in float32
# what onnxruntime and the heap hold besides the batch: thread pools, kernels' packed weights,
# free heap not yet handed back (measured on ResNet-50: about 150 MiB)
RUNTIME_OVERHEAD = 256 * 2**20
# Bytes of per-sample memory (``calibration_memory``) a batch aims at, whatever the budget:
# larger batches were slower per image, as their activations are fresh memory the kernel
# page-faults in (ResNet-50, 512 images: 81 ms per image in batches of 9, 120 in batches of
# 48, 127 in batches of 125; docs/performance.md). The simulator's cuts aim at a size too.
SPEED_TARGET = 256 * 2**20


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
        self.kept.append(per_channel.astype(np.float32, copy=False))  # zeros dropped later

    def positives(self) -> list[np.ndarray]:
        """Per channel, the positive activations at the sampled positions."""
        if not self.kept:
            return [np.zeros(0, np.float32) for _ in range(self.channels)]
        every = np.concatenate(self.kept, axis=1)
        return [row[row > 0] for row in every]


def calibration_memory(ann: Graph, dtype: type) -> tuple[int, int]:
    """(fixed, per sample): the bytes calibration adds to the process, beside the graph and the
    data already in memory, for a batch of B samples: ``fixed + B · per_sample``.

    Fixed: onnxruntime's copy of the weights (in ``dtype``), NumPy's im2col scratch where
    convolutions run in NumPy (float64), the statistics (at most ``SAMPLE_CAP`` float32 values per
    ReLU layer, C·1000 for a layer of C > 2000 channels), and ``RUNTIME_OVERHEAD``.
    Per sample: the node outputs alive at once (``memory.footprint``'s work: the peak over the
    topological order, ×2 for kernel temporaries: a convolution's input and output in
    onnxruntime's blocked layout) and, for the layer being folded in, a copy and a float32 copy.
    Measured on ResNet-50 (docs/performance.md): the peak stays within this estimate because the
    heap is handed back to the system after every batch (``release_freed_memory``).
    """
    size = np.dtype(dtype).itemsize
    fp = footprint(ann, size, ())
    params = sum(a.size for n in ann.nodes for a in n.arrays().values()) * size
    scratch = _COL_BUDGET if size == 8 and any(isinstance(n, Conv) for n in ann.nodes) else 0
    relus = [n for n in ann.nodes if isinstance(n, Relu)]
    samples = sum(max(SAMPLE_CAP, 1000 * (n.shape[0] if n.shape else 1)) for n in relus) * 4
    largest = max(int(np.prod(n.shape)) for n in ann.nodes)
    fixed = params + scratch + samples + RUNTIME_OVERHEAD
    return fixed, fp.work + largest * (size + 4)


def calibration_batch(ann: Graph, dtype: type, memory: int, batch_size: int) -> int:
    """Samples per batch (at most ``batch_size``) that keep calibration within ``memory`` bytes
    (``calibration_memory``) and, for speed, the batch's share of it near ``SPEED_TARGET``;
    raises ``BackendError`` when not even one sample fits."""
    fixed, per_sample = calibration_memory(ann, dtype)
    room = memory - fixed
    if room < per_sample:
        raise BackendError(f"the memory budget of {memory / 2**20:.0f} MiB is too small to "
                           f"calibrate this network: one image needs about "
                           f"{(fixed + per_sample) / 2**20:.0f} MiB; give more memory")
    return int(max(1, min(batch_size, room // per_sample, SPEED_TARGET // per_sample)))


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    glibc keeps memory freed by NumPy and onnxruntime in its heaps for reuse; after a batch of
    large activations that is hundreds of MiB, and the next batch's allocations land beside it,
    so the resident size would ratchet up batch after batch, past any budget (measured on
    ResNet-50: 0.8 GiB kept after a batch of 16 images, all of it returned by ``malloc_trim``).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def in_place_kernels(ann: Graph) -> dict[str, Callable[..., np.ndarray]]:
    """Kernels computing a ``Relu`` or ``Add`` into its (first) input where nothing else reads it.

    Applies when the input comes from a ``Conv``, ``Dense`` or ``Add`` (each returns a new array)
    and this node is its only consumer: the same arithmetic (max(x, 0), then min with the ceiling;
    x0 + x1 + … left to right), without allocating and page-faulting a new output.
    """
    consumers = ann.consumers()
    fresh = (Conv, Dense, Add)
    out: dict[str, Callable[..., np.ndarray]] = {}
    for n in ann.nodes:
        if type(n) not in (Relu, Add):
            continue
        first = ann[n.inputs[0]]
        if type(first) not in fresh or consumers[first.name] != [n.name] \
                or n.inputs.count(first.name) > 1:
            continue
        if isinstance(n, Relu):
            out[n.name] = functools.partial(_relu_in_place, ceiling=n.ceiling)
        else:
            out[n.name] = _add_in_place
    return out


def _relu_in_place(x: np.ndarray, ceiling: float | None) -> np.ndarray:
    np.maximum(x, 0, out=x)
    if ceiling is not None:
        np.minimum(x, ceiling, out=x)
    return x


def _add_in_place(x: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    for r in rest:
        np.add(x, r, out=x)
    return x


def collect_stats(ann: Graph, x: np.ndarray, batch_size: int = 256, seed: int = 0,
                  progress: Callable[[int], None] | None = None,
                  memory: int | str | None = None,
                  dtype: type | None = None) -> dict[str, LayerStats]:
    """Run the ANN on ``x`` and gather per-ReLU statistics (max, positive samples, means).

    ``batch_size`` is an upper bound: batches are cut smaller to fit ``memory`` (bytes or text
    such as "4GB"; default ``default_memory()``), which bounds what calibration adds to the
    process (``calibration_memory``). ``dtype`` None chooses by size (see above).
    """
    relus = [n.name for n in ann.nodes if isinstance(n, Relu)]
    if dtype is None:
        dtype = np.float64 if ann.macs() <= FLOAT64_MACS else np.float32
    budget = default_memory() if memory is None else parse_memory(memory)
    step = calibration_batch(ann, dtype, budget, batch_size)
    kernels = {**synapse_kernels(ann, dtype), **in_place_kernels(ann)}
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
        release_freed_memory()
        count += len(batch)
        if progress is not None:
            progress(len(batch))
    out = {}
    for name in relus:  # each layer's sample is dropped as soon as its positives are taken
        st = stats.pop(name)
        out[name] = LayerStats(name, float(st.maxima.max()), st.maxima, st.positives(),
                               st.sums / max(count, 1))
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
