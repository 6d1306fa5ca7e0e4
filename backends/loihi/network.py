"""Build and run the Lava process network of a graph quantized for Loihi 2.

``LavaNetwork(graph, timesteps, precision)`` makes one process per IR node: a ``RingBuffer``
source for the input, ``Dense``/``Conv`` for the synapses, ``LIF`` (lif), ``IFSubtract``
(if-subtract, our process in ``procs/``) or ``SigmaDelta`` (sdnn) for the populations, and a sink
``RingBuffer`` on every population and on the synapses into each readout. Layout: IR populations
are (C, H, W), Lava's are (W, H, C); a flatten before a Dense becomes a Lava flatten of (W, H, C)
with the Dense columns permuted to match. Residual sums and split Concats (one synapse process
per concatenated input, ``onnx2snn.quantize``) are fan-in: several synapses connect to one neuron
input port, which adds them.

One network serves a whole batch: it is compiled once, and between images the input buffer is
replaced and every state variable reset, so each image runs from the same zero state as the
reference simulator. ``close()`` stops the runtime; use the network as a context manager so that
it is stopped also on errors and Ctrl-C (a Lava run that is not stopped hangs at exit).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import numpy as np

from onnx2snn import numerics
from onnx2snn.backends.loihi.lifecycle import LavaInterrupted, LavaStartGuard, shutdown_runtime
from onnx2snn.errors import BackendError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.loihi import LoihiConv, LoihiDense, LoihiInput, LoihiNeuron, LoihiReadout
from onnx2snn.ir.nodes import Add, Reshape
from onnx2snn.targets import loihi2

PRECISIONS = ("fixed_pt", "floating_pt")


def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Lava's shape of an IR tensor: (C, H, W) -> (W, H, C); vectors unchanged."""
    return tuple(reversed(shape)) if len(shape) == 3 else tuple(shape)


def _to_lava(a: np.ndarray, ir_ndim: int) -> np.ndarray:
    """(..., C, H, W) -> (..., W, H, C)."""
    if ir_ndim != 3:
        return a
    n = a.ndim
    return np.moveaxis(a, (n - 3, n - 2, n - 1), (n - 1, n - 2, n - 3))


def _from_lava(a: np.ndarray, ir_ndim: int) -> np.ndarray:
    return _to_lava(a, ir_ndim)  # the transpose of the last three axes is its own inverse


def flatten_permutation(shape: tuple[int, ...]) -> np.ndarray:
    """For each position of Lava's flattened (W, H, C) tensor, the index in the IR's C-order."""
    if len(shape) != 3:
        return np.arange(int(np.prod(shape)))
    return np.arange(int(np.prod(shape))).reshape(shape).transpose(2, 1, 0).reshape(-1)


def regroup_for_lava(w: np.ndarray, groups: int) -> tuple[np.ndarray, int]:
    """The same grouped convolution with at most ``loihi2.LAVA_CONV_GROUPS_MAX`` groups.

    ``w`` is (O, C/groups, KH, KW). f consecutive groups (f the smallest divisor of ``groups``
    that brings it under the limit) become one group of f·C/groups inputs and f·O/groups
    outputs whose weights are block-diagonal: output rows of original group g read only the
    inputs of g (local block g mod f), zero elsewhere. A depthwise layer of 128 channels becomes
    64 groups of 2 × 2.
    """
    if groups <= loihi2.LAVA_CONV_GROUPS_MAX:
        return w, groups
    f = next(k for k in range(2, groups + 1)
             if groups % k == 0 and groups // k <= loihi2.LAVA_CONV_GROUPS_MAX)
    return numerics.merge_groups(w, groups, f), groups // f


def conv_weight_to_lava(w: np.ndarray) -> np.ndarray:
    """ONNX (O, C, KH, KW) cross-correlation weights -> Lava Conv (O, KW, KH, C) convolution."""
    return w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)


class LavaNetwork:
    """The Lava processes of a quantized graph, compiled on first use, reusable across images."""

    def __init__(self, graph: Graph, timesteps: int, precision: str = "fixed_pt"):
        if precision not in PRECISIONS:
            raise BackendError(f"unknown Lava precision {precision!r}; choose one of {PRECISIONS}")
        if not any(isinstance(n, LoihiNeuron) for n in graph.nodes):
            raise BackendError("the Lava network needs a graph quantized for Loihi "
                               "(onnx2snn.quantize.quantize_for_loihi)")
        self.graph = graph
        self.timesteps = timesteps
        self.precision = precision
        self._started = False
        self._build()

    # -- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import Dense
        from lava.proc.io.sink import RingBuffer as Sink
        from lava.proc.io.source import RingBuffer as Source

        fixed = self.precision == "fixed_pt"
        t = self.timesteps
        port: dict[str, Any] = {}  # node -> Lava OutPort it sends on
        flat_of: dict[str, tuple[int, ...]] = {}  # reshape node -> 3-D shape it flattened
        syn_out: dict[str, list[Any]] = {}  # synapse/add node -> a_out ports
        msg_scale: dict[str, float] = {}  # float runs: value of one message of a source, in ints
        self.source: Any = None
        self.populations: dict[str, Any] = {}
        self.synapses: dict[str, Any] = {}
        self.sinks: dict[str, Any] = {}
        self.readouts: dict[str, LoihiReadout] = {}
        for n in self.graph.nodes:
            if isinstance(n, LoihiInput):
                if self.source is not None:
                    raise BackendError("the Lava backend supports one input")
                self.input_node = n
                self.source = Source(data=np.zeros(lava_shape(n.shape) + (t,), np.int32))
                port[n.name] = self.source.s_out
                msg_scale[n.name] = 1.0
            elif isinstance(n, Reshape):
                src = self.graph[n.inputs[0]]
                if len(n.shape) != 1:
                    raise BackendError(f"reshape {n.name!r}: only flattening maps to Lava")
                p = port[src.name]
                port[n.name] = p.flatten() if len(src.shape) == 3 else p
                flat_of[n.name] = flat_of.get(src.name, src.shape)
                msg_scale[n.name] = msg_scale[src.name]
            elif isinstance(n, LoihiDense):
                w = n.weight_mant.astype(np.int64)
                src_name = n.inputs[0]
                if src_name in flat_of:
                    w = w[:, flatten_permutation(flat_of[src_name])]
                if fixed:
                    w_lava, e_lava = loihi2.lava_dense_weights(w, n.weight_exp)
                    d = Dense(weights=w_lava, weight_exp=e_lava, num_message_bits=n.message_bits)
                else:
                    wf = w * 2.0**n.weight_exp / msg_scale[src_name]
                    d = Dense(weights=wf, num_message_bits=n.message_bits)
                port[src_name].connect(d.s_in)
                self.synapses[n.name] = d
                syn_out[n.name] = [d.a_out]
            elif isinstance(n, LoihiConv):
                src = self.graph[n.inputs[0]]
                w_onnx, groups = regroup_for_lava(n.weight_int(), n.groups)
                w = conv_weight_to_lava(w_onnx)
                kw: dict[str, Any] = dict(
                    input_shape=lava_shape(src.shape), padding=(n.pads[1], n.pads[0]),
                    stride=(n.strides[1], n.strides[0]), groups=groups,
                    dilation=(n.dilations[1], n.dilations[0]), num_message_bits=n.message_bits)
                c = Conv(weight=w.astype(np.int32) if fixed else w / msg_scale[src.name], **kw)
                port[src.name].connect(c.s_in)
                self.synapses[n.name] = c
                syn_out[n.name] = [c.a_out]
            elif isinstance(n, Add):
                syn_out[n.name] = [p for i in n.inputs for p in syn_out[i]]
            elif isinstance(n, LoihiNeuron):
                proc = self._neuron(n, fixed)
                for p in syn_out[n.inputs[0]]:
                    p.connect(proc.a_in)
                self.populations[n.name] = proc
                port[n.name] = proc.s_out
                msg_scale[n.name] = 2.0**n.state_exp if n.mode == "sdnn" and not fixed else 1.0
                sink = Sink(shape=lava_shape(n.shape), buffer=t)
                proc.s_out.connect(sink.a_in)
                self.sinks[n.name] = sink
            elif isinstance(n, LoihiReadout):
                sink = Sink(shape=lava_shape(n.shape), buffer=t)
                for p in syn_out[n.inputs[0]]:
                    p.connect(sink.a_in)
                self.sinks[n.name] = sink
                self.readouts[n.name] = n
            else:
                raise BackendError(f"{n.kind} node {n.name!r} has no Lava process")
        if self.source is None:
            raise BackendError("the graph has no Loihi input")

    def _neuron(self, n: LoihiNeuron, fixed: bool) -> Any:
        lshape = lava_shape(n.shape)
        bias = _to_lava(np.broadcast_to(n.bias_int(), n.shape), len(n.shape))
        if n.mode == "sdnn":
            from lava.proc.sdn.process import ActivationMode, SigmaDelta

            proc = SigmaDelta(shape=lshape, vth=1, bias=0, act_mode=ActivationMode.RELU,
                              state_exp=n.state_exp if fixed else 0)
            proc.vth.init = n.vth  # in state units (the constructor would scale it by 2**state_exp)
            proc.bias.init = bias.astype(np.int32) if fixed else bias.astype(float)
            return proc
        if n.mode == "lif":
            from lava.proc.lif.process import LIF as cls
        else:
            from onnx2snn.backends.loihi.procs.if_subtract import IFSubtract as cls
        v0 = _to_lava(np.broadcast_to(n.v0, n.shape), len(n.shape)).astype(np.int64)
        if fixed:
            return cls(shape=lshape, du=loihi2.LIF_DU, dv=loihi2.LIF_DV, vth=n.vth,
                       bias_mant=_to_lava(np.broadcast_to(n.bias_mant, n.shape),
                                          len(n.shape)).astype(np.int32),
                       bias_exp=n.bias_exp, v=v0.astype(np.int32))
        return cls(shape=lshape, du=1.0, dv=0.0, vth=float(n.vth), bias_mant=bias / 64.0,
                   bias_exp=0, v=v0 / 64.0)

    # -- running ---------------------------------------------------------------------------
    def _reset(self) -> None:
        for name, proc in self.populations.items():
            n = self.graph[name]
            assert isinstance(n, LoihiNeuron)
            if n.mode == "sdnn":
                for var in (proc.sigma, proc.act, proc.residue, proc.error):
                    var.set(np.zeros(var.shape))
            else:
                proc.u.set(np.zeros(proc.u.shape))
                proc.v.set(np.asarray(proc.v.init, dtype=float) * np.ones(proc.v.shape))
        for syn in self.synapses.values():
            buf = syn.a_buff if hasattr(syn, "a_buff") else syn.a_buf
            buf.set(np.zeros(buf.shape))

    def run_one(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run one input (IR shape) for ``timesteps``: {sink node: (T, *IR shape)} messages."""
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg

        n = self.input_node
        q = n.quantize(x)
        data = np.broadcast_to(q, (self.timesteps,) + q.shape).copy()
        if n.encoding == "delta":
            data[1:] = 0
        data = np.moveaxis(_to_lava(data, len(n.shape)), 0, -1)
        if self._started:
            self.source.data.set(data.astype(np.int32 if self.precision == "fixed_pt" else float))
            self._reset()
        else:
            self.source.data.init = data.astype(np.int32)
        if not self._started and self.source.runtime is None:
            exe = self.source.compile(Loihi2SimCfg(select_tag=self.precision))
            with self._start_guard():  # forks Lava's OS processes
                self.source.create_runtime(executable=exe)
        self.source.run(condition=RunSteps(num_steps=self.timesteps))
        self._started = True
        out = {}
        for name, sink in self.sinks.items():
            d = np.asarray(sink.data.get())
            d = np.moveaxis(d, -1, 0)
            out[name] = _from_lava(d, len(self.graph[name].shape))
        return out

    def run(self, x: np.ndarray, progress: Callable[[int], None] | None = None
            ) -> dict[str, np.ndarray]:
        """Run every input of ``x`` (N, *shape): {sink node: (T, N, *IR shape)}."""
        per: list[dict[str, np.ndarray]] = []
        for xi in x:
            per.append(self.run_one(xi))
            if progress is not None:
                progress(1)
        return {k: np.stack([p[k] for p in per], axis=1) for k in per[0]}

    def _start_guard(self) -> LavaStartGuard:
        """Around the runtime's creation: Lava's OS processes ignore SIGINT/SIGTERM (lifecycle)."""
        self._guard = LavaStartGuard()
        return self._guard

    def close(self, graceful: bool = True) -> None:
        """Stop the Lava runtime and end its OS processes (safe to call twice or before any run).

        ``graceful``: Lava's own stop when it answers within ``lifecycle.STOP_TIMEOUT_S``, else
        (and without it) the processes are killed (``lifecycle.shutdown_runtime``). A Ctrl-C or
        SIGTERM arriving meanwhile is held and raised afterwards as ``LavaInterrupted``.
        """
        self._started = False
        runtime = self.source.runtime
        if runtime is None or runtime is getattr(self, "_stopped_runtime", None):
            return
        self._stopped_runtime = runtime
        held = shutdown_runtime(runtime, getattr(self, "_guard", None), graceful=graceful)
        if held:
            raise LavaInterrupted(signum=held[0])

    def __enter__(self) -> LavaNetwork:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        """Close; after an interrupt (KeyboardInterrupt) the processes are killed at once (Lava's
        message exchange may have been cut half-way) and it leaves as ``LavaInterrupted``."""
        interrupted = isinstance(exc, KeyboardInterrupt)
        try:
            self.close(graceful=not interrupted)
        except LavaInterrupted:
            if not interrupted:
                raise
        if interrupted and not isinstance(exc, LavaInterrupted):
            raise LavaInterrupted(signum=getattr(exc, "signum", signal.SIGINT)) from None


__all__ = ["PRECISIONS", "LavaNetwork", "conv_weight_to_lava", "flatten_permutation",
           "lava_shape"]
