"""How the simulator runs its stateless synapse layers: onnxruntime sessions or NumPy.

The synapse layers (``Dense``, ``Conv``) hold no state, so the simulator runs each over all
steps and samples of a chunk at once, as one batch of steps·B inputs. With ``kernels="auto"``
(the default) or ``"onnxruntime"`` each float ``Dense`` and ``Conv`` node becomes a one-node
onnxruntime session (``Gemm`` with transB=1, ``Conv``) in the simulator's float type, whose
optimised kernels (MLAS) are several times faster than NumPy's im2col on large convolutions.
Average pools (``AvgPool`` without ceil mode) run as onnxruntime ``AveragePool`` sessions under
both (within float rounding of NumPy's kernel, 6-8× faster). ``"numpy"`` keeps every layer in
``onnx2snn.numerics``. ``"auto"`` runs pointwise convolutions
(1×1, one group, no padding; ``pointwise_kernel``) as one NumPy matrix product per sample
instead, when their weight matrix has fewer than ``POINTWISE_NUMPY_MAX`` entries:
onnxruntime's CPU kernel for them ran at 1-4 G MAC/s on the small maps of the bundled and
MNIST-size nets, NumPy's at 4-11, while on ResNet-50's large ones onnxruntime's was faster
(docs/performance.md).

Execution providers: the sessions use ``default_providers()`` (CUDA first when this onnxruntime
build has it, then the CPU), or the list given after a colon,
``"onnxruntime:CUDAExecutionProvider,CPUExecutionProvider"`` (``parse_kernels``). With a
provider other than the CPU's, ``"auto"`` keeps every Dense and Conv in onnxruntime.

Exactness: both compute y = W·x + b in the simulator's float type and differ only in the
rounding of the sums (relative 1e-7 in float32, 1e-16 in float64); a spike can flip where a
membrane potential lands within that rounding of its threshold. onnxruntime's CPU kernels give
every sample the same bits whatever the batch size, so how the simulator cuts a run into
batches and chunks of steps does not change its result; OpenBLAS, behind NumPy's matrix
product, does not promise that for one product over many rows (the bits of a row can change
with the number of rows), which is why ``pointwise_kernel`` makes one product of the same shape
per sample (a stacked ``np.matmul``), whose bits cannot depend on the other samples.

The fixed-point Loihi nodes (``LoihiDense``, ``LoihiConv``) carry integers, and their kernels
must give exactly the bits of their NumPy float64 ``forward``: ``fixed_point_kernel`` runs
their integer product in float32 (the kernels above, CPU only) where ``exact_in_float32``
proves it exact, and NumPy float64 where it does not.

``"auto"`` falls back to NumPy for a node onnxruntime cannot run in the simulator's float type
(e.g. ``Conv`` in float64 on builds without a double kernel); ``"onnxruntime"`` refuses then.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from onnx2snn.errors import BackendError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.loihi import LoihiConv, LoihiDense, LoihiInput
from onnx2snn.ir.nodes import AvgPool, Conv, Dense, MaxPool, Node
from onnx2snn.ir.spiking import MaxPoolGate

KERNELS = ("auto", "numpy", "onnxruntime")
THREADS_ENV = "ONNX2SNN_THREADS"  # onnxruntime's intra-op threads (default: its own choice)
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = ("CUDAExecutionProvider",)  # put before the CPU when onnxruntime has them
# Pointwise convolutions with a weight matrix (O×C) at least this large run in onnxruntime
# under auto: its kernel ran ResNet-50's 512→128 to 2048→512 products at 96-107 G MAC/s
# against NumPy's 62-91, and the smaller ones as fast as NumPy or slower (docs/performance.md)
POINTWISE_NUMPY_MAX = 2**16
FLOAT32_EXACT = 2**24  # float32 holds every integer of smaller magnitude (24-bit significand)

Kernel = Callable[..., np.ndarray]


def _onnx_node(node: Dense | Conv | AvgPool | MaxPool, dtype: type) -> tuple[Any, list[Any]]:
    """The ONNX node computing ``node`` on input "x" to output "y", and its initializers; a
    MaxPoolGate's MaxPool also gives its maxima's flat indices as "i" (``argmax_pool_kernel``)."""
    from onnx import helper, numpy_helper

    if isinstance(node, MaxPool):
        outputs = ["y", "i"] if isinstance(node, MaxPoolGate) else ["y"]
        return helper.make_node("MaxPool", ["x"], outputs, kernel_shape=list(node.kernel),
                                strides=list(node.strides), pads=list(node.pads),
                                dilations=list(node.dilations),
                                ceil_mode=int(node.ceil_mode)), []
    if isinstance(node, AvgPool):
        return helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=list(node.kernel),
                                strides=list(node.strides), pads=list(node.pads),
                                count_include_pad=int(node.count_include_pad)), []
    inputs = ["x", "w"] + (["b"] if node.bias is not None else [])
    inits = [numpy_helper.from_array(np.ascontiguousarray(node.weight, dtype=dtype), "w")]
    if node.bias is not None:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(node.bias, dtype=dtype), "b"))
    if isinstance(node, Dense):
        return helper.make_node("Gemm", inputs, ["y"], transB=1), inits
    kh, kw = node.weight.shape[2:]
    return helper.make_node("Conv", inputs, ["y"], kernel_shape=[kh, kw],
                            strides=list(node.strides), pads=list(node.pads),
                            dilations=list(node.dilations), group=node.groups), inits


def default_providers() -> tuple[str, ...]:
    """The execution providers of the sessions: a GPU's first when onnxruntime has one."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return tuple(p for p in GPU_PROVIDERS if p in available) + (CPU,)


def parse_kernels(text: str) -> tuple[str, tuple[str, ...] | None]:
    """(mode, providers) from ``auto``, ``numpy``, ``onnxruntime`` or ``MODE:PROVIDER,...``.

    ``providers`` is None when none are given (``default_providers()`` then). Raises
    ``BackendError`` for an unknown mode, a list after ``numpy``, or a provider this
    onnxruntime does not have (naming those it has).
    """
    mode, _, listed = text.partition(":")
    if mode not in KERNELS:
        raise BackendError(f"unknown kernels {text!r}; choose one of {', '.join(KERNELS)}, "
                           "optionally followed by :PROVIDER,... (onnxruntime execution "
                           "providers, e.g. onnxruntime:CUDAExecutionProvider,CPUExecutionProvider)")
    if not listed:
        return mode, None
    if mode == "numpy":
        raise BackendError(f"kernels {text!r}: numpy takes no execution providers")
    import onnxruntime as ort

    providers = tuple(p.strip() for p in listed.split(",") if p.strip())
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing or not providers:
        raise BackendError(f"kernels {text!r}: onnxruntime here has no "
                           f"{', '.join(missing) or 'provider in that list'}; it has "
                           f"{', '.join(available)}")
    return mode, providers


def pointwise_kernel(node: Conv, dtype: type) -> Kernel | None:
    """A NumPy function for a pointwise Conv (1×1, one group, no padding), else None.

    y[n] = W · x[n] + b with W (O, C) and x[n] the (C, H·W) map of sample n (strides subsample
    x first): a stacked ``np.matmul``, one product of the same shape per sample, so a sample's
    bits do not depend on the batch. Its sums are rounded otherwise than onnxruntime's.
    """
    if (node.weight.shape[2:] != (1, 1) or node.groups != 1 or any(node.pads)
            or type(node) is not Conv):
        return None
    w: np.ndarray = np.ascontiguousarray(node.weight[:, :, 0, 0], dtype=dtype)
    b: np.ndarray | None = None if node.bias is None else node.bias.astype(dtype).reshape(-1, 1)
    sh, sw = node.strides
    out_c = w.shape[0]

    def run(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=dtype)
        if (sh, sw) != (1, 1):
            x = x[:, :, ::sh, ::sw]
        n, c, h, wd = x.shape
        y = np.matmul(w, x.reshape(n, c, h * wd))
        if b is not None:
            y += b
        return y.reshape(n, out_c, h, wd)

    return run


def ort_kernel(node: Dense | Conv | AvgPool | MaxPool, in_shape: tuple[int, ...], dtype: type,
               providers: tuple[str, ...] = (CPU,)) -> Kernel:
    """A function running ``node`` (Dense, Conv, AvgPool; MaxPool: see ``argmax_pool_kernel``)
    on a batch through an onnxruntime session with the execution ``providers`` (in order of
    preference).

    Raises ``BackendError`` if onnxruntime cannot run it in ``dtype``.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper

    elem = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}
    if np.dtype(dtype) not in elem:
        raise BackendError(f"node {node.name!r}: onnxruntime kernels need float32 or float64, "
                           f"not {np.dtype(dtype)}")
    onnx_node, inits = _onnx_node(node, dtype)
    t = elem[np.dtype(dtype)]
    outputs = [helper.make_tensor_value_info("y", t, ["N", *node.shape])]
    if len(onnx_node.output) == 2:  # MaxPool and its indices
        outputs.append(helper.make_tensor_value_info("i", TensorProto.INT64, ["N", *node.shape]))
    graph = helper.make_graph(
        [onnx_node], node.name or "synapse",
        [helper.make_tensor_value_info("x", t, ["N", *in_shape])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    # No memory arena: an arena per session would keep its largest chunk's buffers for good
    # (one per layer), outside the simulator's memory budget.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    # Idle threads sleep instead of spinning: between two layers the simulator steps its
    # neurons in NumPy, and spinning threads would take the cores it needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if isinstance(node, MaxPool):
        # In ceil mode the kernel drops a last window that would start in the right padding
        # (as ours does, and as later ONNX opsets say), while the shape inference of opset 17
        # keeps it: the kernel's shape is right, the warning about it is noise.
        options.log_severity_level = 3
    threads = os.environ.get(THREADS_ENV)
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=list(providers))
    except Exception as e:  # onnxruntime raises its own exception types
        raise BackendError(f"node {node.name!r}: onnxruntime cannot run {onnx_node.op_type} "
                           f"in {np.dtype(dtype)}: {e}; use kernels='numpy'") from e

    def run(x: np.ndarray) -> Any:
        outs = session.run(None, {"x": np.ascontiguousarray(x, dtype=dtype)})
        return outs[0] if len(outs) == 1 else tuple(outs)

    run.session = session  # type: ignore[attr-defined]  # for tests: the providers it got
    return run


# Sessions already made, per node (nodes are immutable; a node that is garbage-collected drops
# its sessions), keyed by (process id, float type, input shape, providers): a forked worker
# process makes
# its own, since onnxruntime's thread pools do not survive a fork.
# A node onnxruntime cannot run keeps its error, so that it is not tried again.
_SESSIONS: weakref.WeakKeyDictionary[
    Node, dict[tuple[int, str, tuple[int, ...], tuple[str, ...]], Kernel | BackendError]] = \
    weakref.WeakKeyDictionary()


def _cached_kernel(node: Dense | Conv | AvgPool | MaxPool, in_shape: tuple[int, ...],
                   dtype: type, providers: tuple[str, ...]) -> Kernel:
    key = (os.getpid(), np.dtype(dtype).str, in_shape, providers)
    per_node = _SESSIONS.setdefault(node, {})
    if key not in per_node:
        try:
            per_node[key] = ort_kernel(node, in_shape, dtype, providers)
        except BackendError as e:
            per_node[key] = e
    found = per_node[key]
    if isinstance(found, BackendError):
        raise found
    return found


def argmax_pool_kernel(node: MaxPool, in_shape: tuple[int, ...],
                       dtype: type) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A function mapping a batch x (N, C, H, W) to (y, leader): y the window maxima of ``node``
    and leader the flat index into x (over all N·C·H·W) of the first input in row-major order
    of its window that equals the maximum; padding never wins.

    onnxruntime's CPU ``MaxPool`` with its ``Indices`` output, in one pass over x (the window
    max in NumPy is KH·KW passes, and finding the first input at the maximum as many more).
    Its rule for ties, the first in row-major order, is checked against a direct search over
    random geometries with many ties (tests/test_kernels.py)."""
    return cast(Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                _cached_kernel(node, in_shape, dtype, (CPU,)))


def exact_in_float32(x: np.ndarray, fan_in_l1: int) -> bool:
    """Whether an integer product W·x (integer W, integer-valued ``x``) is exact in float32.

    Every partial sum s of an output y_o = Σ_i W[o, i]·x_i, in any order, satisfies

        |s| ≤ Σ_i |W[o, i]|·|x_i| ≤ max|x| · max_o Σ_i |W[o, i]| = max|x| · fan_in_l1

    so where max|x| · fan_in_l1 < 2**24 every product, partial sum and output is an integer
    that float32 holds exactly, each float32 multiply, add or fused multiply-add is exact, and
    the result equals the exact integer sum (which the float64 path also gets, below 2**53).
    max|x| is taken on the batch itself (one pass): binary spikes give 1, but the input source's
    and sigma-delta populations' graded messages can be wide enough to fail the bound.
    """
    peak = max(float(x.max()), -float(x.min())) if x.size else 0.0  # no |x| temporary
    return peak * fan_in_l1 < FLOAT32_EXACT


def fixed_point_kernel(node: LoihiDense | LoihiConv, in_shape: tuple[int, ...],
                       pointwise: bool = True) -> Kernel | None:
    """A kernel giving exactly the bits of ``node.forward``, faster; None if there is none.

    On a batch where ``exact_in_float32`` holds, the integer product ``node.product`` runs in
    float32 (an onnxruntime session on the CPU, or ``pointwise_kernel`` for a pointwise Conv
    when ``pointwise``), is cast to float64 and finished (``node.finish``: exponent, wrap) as
    ``forward`` does; on any other batch it runs ``forward`` itself (NumPy, float64). Only
    the CPU's kernels: a GPU's may round in TF32 or transform the sums (Winograd, FFT).
    """
    product = node.product
    fast = pointwise_kernel(product, np.float32) if pointwise and isinstance(product, Conv) \
        else None
    if fast is None:
        try:
            fast = _cached_kernel(product, in_shape, np.float32, (CPU,))
        except BackendError:
            return None
    l1 = node.fan_in_l1()

    def run(x: np.ndarray) -> np.ndarray:
        if not exact_in_float32(x, l1):
            return node.forward(x)
        return node.finish(fast(x).astype(np.float64))

    return run


def synapse_kernels(graph: Graph, dtype: type, kernels: str = "auto") -> dict[str, Kernel]:
    """The kernel of every synapse node that does not run its own ``forward``, by node name.

    ``kernels`` as ``parse_kernels`` reads it. onnxruntime sessions are made once per node,
    float type, providers and process, and reused by later simulations of the same nodes.
    Fixed-point Loihi synapses get ``fixed_point_kernel`` (same bits as their ``forward``)
    under ``auto`` and ``onnxruntime`` in a graph whose every input is a ``LoihiInput`` (as
    ``quantize_for_loihi`` makes them), so that every value they read is an integer: the
    quantized input, spikes, sigma-delta messages, and views and sums of those. ``numpy``, or
    another input, keeps them in NumPy."""
    mode, listed = parse_kernels(kernels)
    if mode == "numpy":
        return {}
    providers = listed or default_providers()
    cpu_only = providers == (CPU,)
    integers = all(isinstance(graph[i], LoihiInput) for i in graph.inputs)
    out: dict[str, Kernel] = {}
    for node in graph.nodes:
        if isinstance(node, (LoihiDense, LoihiConv)):
            exact = fixed_point_kernel(node, tuple(graph.input_shapes(node)[0]),
                                       pointwise=mode == "auto") if integers else None
            if exact is not None:
                out[node.name] = exact
            continue
        if type(node) is MaxPool:
            # onnxruntime's MaxPool: the same maxima as numerics.max_pool2d (a maximum is
            # exact), in one pass instead of KH·KW; ceil mode included (tests/test_kernels.py)
            with contextlib.suppress(BackendError):
                out[node.name] = _cached_kernel(node, tuple(graph.input_shapes(node)[0]), dtype,
                                                providers)
            continue
        if type(node) is AvgPool and not node.ceil_mode:
            # onnxruntime's AveragePool: numerics.avg_pool2d within float rounding (often the
            # same bits; tests/test_kernels.py) at 6-8× its speed. Kept in NumPy
            # where onnxruntime cannot run it (ceil mode, whose extra cells ONNX runtimes
            # count differently, and float64 on builds without it); never refused.
            with contextlib.suppress(BackendError):
                out[node.name] = _cached_kernel(node, tuple(graph.input_shapes(node)[0]), dtype,
                                                providers)
            continue
        if not isinstance(node, (Dense, Conv)) or type(node) not in (Dense, Conv):
            continue
        if node.bias is not None and node.bias.ndim > 1:  # a bias per position: NumPy's forward
            continue
        if mode == "auto" and cpu_only and isinstance(node, Conv) \
                and node.weight.shape[0] * node.weight.shape[1] < POINTWISE_NUMPY_MAX:
            fast = pointwise_kernel(node, dtype)
            if fast is not None:
                out[node.name] = fast
                continue
        (in_shape,) = graph.input_shapes(node)
        try:
            out[node.name] = _cached_kernel(node, tuple(in_shape), dtype, providers)
        except BackendError:
            if mode == "onnxruntime":
                raise
    return out


__all__ = ["FLOAT32_EXACT", "KERNELS", "POINTWISE_NUMPY_MAX", "THREADS_ENV", "argmax_pool_kernel",
           "default_providers", "exact_in_float32", "fixed_point_kernel", "ort_kernel",
           "parse_kernels", "pointwise_kernel", "synapse_kernels"]
