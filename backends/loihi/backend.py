"""``LoihiBackend``: check / emit / run for Loihi 2 through Lava."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from onnx2snn import __version__
from onnx2snn.backends.base import Backend
from onnx2snn.backends.loihi.artifacts import (
    NETX_LOAD_ARGS,
    netx_problem,
    resource_estimate,
    resource_table,
    write_netx,
)
from onnx2snn.backends.numpy.simulator import SimResult, fanout
from onnx2snn.errors import BackendError, PassError
from onnx2snn.ir import save_graph
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.loihi import LoihiNeuron, LoihiReadout
from onnx2snn.quantize import prepare_for_loihi, quantize_for_loihi, unsupported_nodes
from onnx2snn.targets.loihi2 import NEURON_MODES

DEFAULT_NEURON = "sdnn"
DEPLOYABLE = {"sdnn": True, "lif": True, "if-subtract": False}


def is_quantized(graph: Graph) -> bool:
    return any(isinstance(n, LoihiNeuron) for n in graph.nodes)


def import_lava() -> None:
    """Import Lava's runtime (once) so that a network can be built after any progress bar.

    Importing it calls ``multiprocessing.set_start_method("fork")``, which raises "context has
    already been set" once anything has fixed the start method, as the lock of the first tqdm bar
    does. Lava needs fork in any case: the method is unset first.
    """
    import multiprocessing
    import sys

    if "lava.magma.runtime.message_infrastructure.multiprocessing" in sys.modules:
        return
    if multiprocessing.get_start_method(allow_none=True) is not None:
        multiprocessing.set_start_method(None, force=True)
    import lava.magma.core.process.process  # noqa: F401


def _lava_version() -> str:
    try:
        return metadata.version("lava-nc")
    except metadata.PackageNotFoundError:
        return "not installed"


class LoihiBackend(Backend):
    """Loihi 2 through Lava: fixed-point quantization, netx export, Lava CPU simulation."""

    name = "loihi"
    description = "Intel Loihi 2 through Lava (lava-nc)"
    deployable = True

    def quantize(self, graph: Graph, neuron: str = DEFAULT_NEURON,
                 calib_x: np.ndarray | None = None, **options: Any) -> Graph:
        """The graph quantized for Loihi (returned unchanged if it already is)."""
        if is_quantized(graph):
            return graph
        return quantize_for_loihi(graph, neuron, calib_x=calib_x, **options).graph

    def check(self, graph: Graph, **options: Any) -> list[str]:
        neuron = options.get("neuron", DEFAULT_NEURON)
        if neuron not in NEURON_MODES:
            return [f"unknown neuron mode {neuron!r}; choose one of {', '.join(NEURON_MODES)}"]
        if is_quantized(graph):
            return []
        problems = unsupported_nodes(graph)  # all of them at once
        if problems:
            return problems
        try:
            prepare_for_loihi(graph)
        except PassError as e:
            return [str(e)]
        return []

    def emit(self, graph: Graph, out_dir: Path, **options: Any) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        neuron = options.pop("neuron", DEFAULT_NEURON)
        calib_x = options.pop("calib_x", None)
        q = self.quantize(graph, neuron, calib_x, **options)
        info = dict(q.meta["loihi"])
        written = [out_dir / "loihi_network.snn"]
        save_graph(q, written[0])
        problem = netx_problem(q)
        netx: dict[str, Any]
        if problem is None:
            path = out_dir / "loihi_netx.h5"
            write_netx(q, path)
            netx = {"file": path.name, "load_with": NETX_LOAD_ARGS,
                    "how": "lava.lib.dl.netx.hdf5.Network(net_config=FILE, **load_with); the input "
                           "is the 8-bit quantized image (flattened in C, H, W order when the "
                           "first block is a Dense); the output is the running sum of the readout "
                           "currents (apply readouts.scale and bias); `./dev netx-check OUT/` "
                           "checks it against the reference spike for spike"}
        else:
            path = out_dir / "loihi_netx_NOT_WRITTEN.txt"
            path.write_text(f"No netx HDF5 file: {problem}.\nRun the network with "
                            "`onnx2snn evaluate OUT/ --backend lava` (Lava CPU simulation).\n")
            netx = {"file": None, "reason": problem}
        written.append(path)
        est = resource_estimate(q)
        manifest = {
            "target": "loihi2", "neuron": info["neuron"], "deployable": DEPLOYABLE[info["neuron"]],
            "deployment_note": None if DEPLOYABLE[info["neuron"]] else
            "if-subtract is a custom Lava process model: Lava CPU simulation only, the stock "
            "Loihi 2 neuron programs reset to zero",
            "input": {"scale": info["input_scale"], "bits": info["input_bits"],
                      "encoding": info["input_encoding"],
                      # sent: round((x - offset) * scale), offset per channel (None: 0)
                      "offset": info.get("input_offset")},
            "message_bits": info["message_bits"], "latency_steps": info["latency_steps"],
            "readouts": {n.name: {"scale": n.scale, "accumulate": n.accumulate}
                         for n in q.nodes if isinstance(n, LoihiReadout)},
            "layers": info["layers"], "netx": netx, "resources": est,
            "versions": {"onnx2snn": __version__, "lava-nc": _lava_version()},
        }
        path = out_dir / "loihi_manifest.json"
        path.write_text(json.dumps(manifest, indent=2, default=float))
        written.append(path)
        path = out_dir / "loihi_resources.md"
        path.write_text("# Loihi 2 resource estimate\n\n" + resource_table(est) + "\n\n"
                        + est["assumptions"] + "\n")
        written.append(path)
        for w in est["warnings"]:
            warnings.warn(w, stacklevel=2)
        return written

    def run(self, graph: Graph, x: np.ndarray, timesteps: int, **options: Any) -> SimResult:
        """Run in Lava's CPU simulator (``precision`` fixed_pt or floating_pt), image by image."""
        import_lava()
        from onnx2snn.backends.loihi.network import LavaNetwork

        precision = options.pop("precision", "fixed_pt")
        progress: Callable[[int], None] | None = options.pop("progress", None)
        neuron = options.pop("neuron", DEFAULT_NEURON)
        calib_x = options.pop("calib_x", None)
        artifact_dir = options.pop("artifact_dir", None)
        for k in ("schedule", "encoder", "dtype", "batch_size", "seed", "record"):
            options.pop(k, None)
        emitted = Path(artifact_dir) / "loihi_network.snn" if artifact_dir else None
        if emitted is not None and emitted.is_file() and not is_quantized(graph):
            from onnx2snn.ir import load_graph

            q = load_graph(emitted)  # what `convert --target loihi` quantized, with its neuron mode
        else:
            q = self.quantize(graph, neuron, calib_x, **options)
        if len(x) == 0:
            raise BackendError("no inputs to run")
        with warnings.catch_warnings():
            # networkx, in Lava's compiler, warns on every graph it builds that pandas is missing
            warnings.filterwarnings("ignore", message="pandas not found", category=ImportWarning)
            with LavaNetwork(q, timesteps, precision) as net:
                out = net.run(np.asarray(x), progress=progress)
        fan = fanout(q)
        spikes, neurons = {}, {}
        sops = np.zeros(timesteps)
        for n in q.nodes:
            if isinstance(n, LoihiNeuron):
                counts = (out[n.name] != 0).reshape(timesteps, -1).sum(axis=1).astype(float)
                spikes[n.name] = counts
                neurons[n.name] = int(np.prod(n.shape))
                sops += counts * fan[n.name]
        preds = {n.name: n.predict(out[n.name]) for n in q.nodes if isinstance(n, LoihiReadout)}
        return SimResult(timesteps, len(x), preds, spikes, neurons, sops)


__all__ = ["DEFAULT_NEURON", "LoihiBackend", "import_lava", "is_quantized"]
