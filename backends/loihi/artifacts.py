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
    layers = []
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


def netx_problem(graph: Graph) -> str | None:
    """Why the graph cannot be a netx file (None if it can): netx loads sequential nets only."""
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
    return None


def write_netx(graph: Graph, path: Path) -> None:
    """Write the lava-dl netx HDF5 layout (``/layer/<i>/``, DESIGN.md §5) of a sequential graph."""
    import h5py

    mode = graph.meta["loihi"]["neuron"]
    nodes = list(graph.nodes)
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
                g = new("input", n.shape)
                g.create_dataset("scale", data=n.scale)
            elif isinstance(n, Reshape):
                new("flatten", n.shape)
            elif isinstance(n, (LoihiDense, LoihiConv)):
                kind = "dense" if isinstance(n, LoihiDense) else "conv"
                g = new(kind, n.shape)
                g.create_dataset("weight", data=n.weight_mant.astype(np.int32))
                g.create_dataset("weight_exp", data=n.weight_exp)
                if isinstance(n, LoihiConv):
                    g.create_dataset("stride", data=np.array(n.strides))
                    g.create_dataset("padding", data=np.array(n.pads))
                    g.create_dataset("dilation", data=np.array(n.dilations))
                    g.create_dataset("groups", data=n.groups)
                nxt = nodes[k + 1] if k + 1 < len(nodes) else None
                if isinstance(nxt, LoihiNeuron):
                    neu = g.create_group("neuron")
                    neu.create_dataset("type", data=np.array(
                        b"SDNN" if mode == "sdnn" else b"CUBA", dtype="S10"))
                    neu.create_dataset("vThMant", data=nxt.vth)
                    if mode != "sdnn":
                        neu.create_dataset("iDecay", data=4095)
                        neu.create_dataset("vDecay", data=0)
                    else:
                        neu.create_dataset("state_exp", data=nxt.state_exp)
                    g.create_dataset("bias", data=np.broadcast_to(nxt.bias_int(), nxt.shape)
                                     .astype(np.int64))


__all__ = ["netx_problem", "resource_estimate", "resource_table", "write_netx"]
