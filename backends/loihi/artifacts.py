"""What ``--target loihi`` writes besides the graph: the netx HDF5 file, the manifest and the
resource estimate. Needs only numpy and h5py (never Lava or torch)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from onnx2snn.ir.graph import Graph
from onnx2snn.ir.loihi import LoihiConv, LoihiDense, LoihiInput, LoihiNeuron, LoihiReadout
from onnx2snn.ir.nodes import Add, Reshape
from onnx2snn.targets.loihi2 import (
    CUBA_BIAS_EXP,
    LAVA_CONV_GROUPS_MAX,
    LIF_DU,
    LIF_DV,
    WEIGHT_MANT_MAX,
)

NEURONS_PER_CORE = 8192
SYNAPSE_BYTES_PER_CORE = 192 * 1024
CORES_PER_CHIP = 128


def resource_estimate(graph: Graph) -> dict[str, Any]:
    """Per layer (population or readout with the synapses into it) and in total: neurons,
    synapses (connections), synaptic memory (1 byte per connection, dense-expanded: conservative
    for convolutions), Loihi 2 cores (8,192 neurons and 192 KB per core) and warnings."""
    syn: dict[str, int] = {}
    for n in graph.nodes:
        if isinstance(n, (LoihiDense, LoihiConv)):
            syn[n.name] = n.macs(graph.input_shapes(n))
        elif isinstance(n, Add):
            syn[n.name] = sum(syn.get(i, 0) for i in n.inputs)
    layers: list[dict[str, Any]] = []
    warnings = []
    for n in graph.nodes:
        if not isinstance(n, (LoihiNeuron, LoihiReadout)):
            continue
        synapses = syn.get(n.inputs[0], 0)
        neurons = int(np.prod(n.shape)) if isinstance(n, LoihiNeuron) else 0
        mem = synapses  # 8-bit weights, one per connection
        cores = max(math.ceil(neurons / NEURONS_PER_CORE), math.ceil(mem / SYNAPSE_BYTES_PER_CORE),
                    1 if isinstance(n, LoihiNeuron) else 0)
        layers.append({"layer": n.name, "neurons": neurons, "synapses": synapses,
                       "synaptic_memory_bytes": mem, "cores": cores})
        if cores > CORES_PER_CHIP:
            warnings.append(f"layer {n.name!r} needs {cores} cores: more than one Loihi 2 chip "
                            f"({CORES_PER_CHIP} cores)")
    total = {k: sum(r[k] for r in layers) for k in ("neurons", "synapses",
                                                    "synaptic_memory_bytes", "cores")}
    return {"layers": layers, "total": total, "warnings": warnings,
            "assumptions": f"{NEURONS_PER_CORE} neurons and {SYNAPSE_BYTES_PER_CORE} bytes of "
                           "synaptic memory per core, 1 byte per connection"}


def resource_table(est: dict[str, Any]) -> str:
    rows = ["| layer | neurons | synapses | synaptic memory (B) | cores |",
            "| --- | ---: | ---: | ---: | ---: |"]
    for r in est["layers"] + [{"layer": "**total**", **est["total"]}]:
        rows.append(f"| {r['layer']} | {r['neurons']:,} | {r['synapses']:,} | "
                    f"{r['synaptic_memory_bytes']:,} | {r['cores']} |")
    return "\n".join(rows + [f"\n> {w}" for w in est["warnings"]])


# How `lava.lib.dl.netx.hdf5.Network` must be called on our files for it to build the same network
# as onnx2snn's own Lava builder: the input is 8-bit graded (not binary spikes), and SDNN thresholds
# and biases are in units of 2**state_exp (netx's default spike_exp = 6 would scale them by 64 more).
NETX_LOAD_ARGS = {"input_message_bits": 8, "spike_exp": 0}


def netx_problem(graph: Graph) -> str | None:
    """Why the graph cannot be a netx file (None if it can).

    netx builds sequential chains of Dense/Conv blocks, each followed by its neuron; it takes
    Dense weights as integers of at most 8 bits (it picks the exponent itself), fixes CUBA's
    bias exponent at 6, and starts every membrane potential at 0.
    """
    mode = graph.meta.get("loihi", {}).get("neuron")
    if mode == "if-subtract":
        return "if-subtract neurons are a custom Lava process (simulation only); netx has CUBA and SDNN"
    prev = None
    for n in graph.nodes:
        if isinstance(n, Add):
            return (f"fan-in sum {n.name!r} (a residual Add or a split Concat): netx loads "
                    "sequential networks only")
        if prev is not None and n.inputs and n.inputs[0] != prev:
            return f"{n.kind} node {n.name!r} does not read the layer before it: netx is sequential"
        prev = n.name
        if isinstance(n, LoihiConv) and n.groups > LAVA_CONV_GROUPS_MAX:
            return (f"conv layer {n.name!r} has {n.groups} groups: netx builds a Lava Conv with "
                    f"them, and lava-nc 0.10 keeps groups in an int8 (from 128 on that Conv sends "
                    "zeros); the Lava process graph splits them itself")
        if isinstance(n, LoihiDense) and (n.weight_exp != 0
                                          or np.abs(n.weight_mant).max() > WEIGHT_MANT_MAX):
            return (f"dense layer {n.name!r} has weight exponent {n.weight_exp}: netx takes 8-bit "
                    "integer weights at exponent 0")
        if isinstance(n, LoihiNeuron):
            if np.any(n.v0 != 0):
                return f"population {n.name!r} starts at v0 != 0: netx starts every neuron at 0"
            if n.bias_exp != CUBA_BIAS_EXP:
                return (f"population {n.name!r} has bias exponent {n.bias_exp}: netx fixes it at "
                        f"{CUBA_BIAS_EXP}")
    return None


def _netx_bias(n: LoihiNeuron) -> np.ndarray:
    """The bias mantissas as netx reads them: one per channel, or per neuron in (W, H, C)."""
    b = np.broadcast_to(n.bias_mant, n.shape).astype(np.int64)
    if b.ndim != 3:
        return b
    per_channel = b[:, :1, :1]
    if np.array_equal(np.broadcast_to(per_channel, b.shape), b):
        return per_channel.reshape(-1)
    return b.transpose(2, 1, 0)


def write_netx(graph: Graph, path: Path) -> None:
    """Write the lava-dl netx HDF5 layout (``/layer/<i>/``, DESIGN.md §5) of a sequential graph.

    Loaded with ``hdf5.Network(path, **NETX_LOAD_ARGS)`` it is the network ``LavaNetwork`` builds:
    one block per synapse layer with the population it feeds (SDNN: SigmaDelta, vth = vThMant·2**6,
    bias = bias·2**6, state_exp 6; CUBA: LIF with du = iDecay − 1 = 4095, dv = 0, bias_exp 6) and
    a last block whose neuron is a Sigma (``sigma_output``) that sends the running sum of the
    readout currents; the readout's scale and bias are in the manifest.
    """
    import h5py

    problem = netx_problem(graph)
    if problem is not None:
        raise ValueError(f"cannot write a netx file: {problem}")
    mode = graph.meta["loihi"]["neuron"]
    nodes = list(graph.nodes)

    def scalar(g: Any, name: str, value: Any) -> None:
        g.create_dataset(name, data=value)

    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        i = 0

        def new(kind: str, shape: tuple[int, ...]) -> Any:
            nonlocal i
            g = layers.create_group(str(i))
            g.create_dataset("type", data=np.array(kind.encode(), dtype="S10"))
            g.create_dataset("shape", data=np.array(shape, dtype=np.int64))
            i += 1
            return g

        for k, n in enumerate(nodes):
            if isinstance(n, LoihiInput):
                new("input", n.shape)
            elif isinstance(n, Reshape):
                new("flatten", n.shape)
            elif isinstance(n, (LoihiDense, LoihiConv)):
                g = new("dense" if isinstance(n, LoihiDense) else "conv", n.shape)
                w = n.weight_int() if isinstance(n, LoihiConv) else n.weight_mant  # exponent 0
                g.create_dataset("weight", data=w.astype(np.int32))
                if isinstance(n, LoihiConv):
                    g.create_dataset("stride", data=np.array(n.strides))
                    g.create_dataset("padding", data=np.array(n.pads))
                    g.create_dataset("dilation", data=np.array(n.dilations))
                    scalar(g, "groups", n.groups)
                nxt = nodes[k + 1] if k + 1 < len(nodes) else None
                neu = g.create_group("neuron")
                if isinstance(nxt, LoihiNeuron):
                    if mode == "sdnn":
                        scalar(neu, "type", np.array(b"SDNN", dtype="S10"))
                        scalar(neu, "vThMant", nxt.vth >> nxt.state_exp)
                    else:
                        scalar(neu, "type", np.array(b"CUBA", dtype="S10"))
                        scalar(neu, "vThMant", nxt.vth)
                        scalar(neu, "iDecay", LIF_DU + 1)  # netx: du = iDecay - 1
                        scalar(neu, "vDecay", LIF_DV)
                    g.create_dataset("bias", data=_netx_bias(nxt))
                else:  # the readout: a Sigma neuron accumulates the currents
                    scalar(neu, "type", np.array(b"SDNN", dtype="S10"))
                    scalar(neu, "sigma_output", 1)


__all__ = ["NETX_LOAD_ARGS", "netx_problem", "resource_estimate", "resource_table", "write_netx"]
