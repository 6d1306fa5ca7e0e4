"""The SpikingJelly side of bench_spikingjelly.py: runs in .venv-sj, never imports
onnx2snn.

It reads a converted SNN graph exported by the driver (JSON structure + arrays in one .npz) and
builds the equivalent multi-step SpikingJelly network: synapse layers (Conv2d, Linear,
AvgPool2d, residual sums, concatenation, flatten) run over all T·B inputs at once through
``layer.SeqToANNContainer``, every IF population is a ``neuron.IFNode`` in multi-step mode on its
current divided by θ (v_threshold = 1; soft reset ``v_reset=None`` or hard reset to 0), whose
spikes are multiplied by the population's output scale; v0 is added to the first step's current.
As in onnx2snn, a time-constant input passes the first synapse layers once. The readout sums its
input over the steps. After one warm-up pass it answers each line ``run`` on stdin with one timed
forward pass over T steps, printed as one JSON line: seconds and the predicted class of every
sample at the last step (so the driver can interleave its own runs with these); end of input
stops it.

    python sj_worker.py GRAPH.npz X.npy T [THREADS]
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn
from torch.nn import functional as F  # noqa: N812


class Synapse(nn.Module):
    """A stateless node over (T, B, ...) inputs (or (1, B, ...) when constant in time)."""

    def __init__(self, spec: dict, arrays: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.kind = spec["kind"]
        a = spec["attrs"]
        w = arrays.get("weight")
        b = arrays.get("bias")
        self.pad: tuple[int, ...] | None = None
        if self.kind == "conv":
            o, cg, kh, kw = w.shape
            top, left, bottom, right = a["pads"]
            sym = top == bottom and left == right
            op = nn.Conv2d(cg * a["groups"], o, (kh, kw), stride=tuple(a["strides"]),
                           padding=(top, left) if sym else 0,
                           dilation=tuple(a["dilations"]), groups=a["groups"], bias=b is not None)
            if not sym:
                self.pad = (left, right, top, bottom)
            op.weight.data = torch.from_numpy(np.ascontiguousarray(w, np.float32))
            if b is not None:
                op.bias.data = torch.from_numpy(b.astype(np.float32))
            self.op: nn.Module = layer.SeqToANNContainer(op)
        elif self.kind == "dense":
            op = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            op.weight.data = torch.from_numpy(np.ascontiguousarray(w, np.float32))
            if b is not None:
                op.bias.data = torch.from_numpy(b.astype(np.float32))
            self.op = layer.SeqToANNContainer(op)
        elif self.kind == "avgpool":
            top, left, bottom, right = a["pads"]
            self.op = layer.SeqToANNContainer(nn.AvgPool2d(
                tuple(a["kernel"]), tuple(a["strides"]), padding=(top, left),
                ceil_mode=a["ceil_mode"], count_include_pad=a["count_include_pad"]))
        elif self.kind == "affine":  # y = scale·x + shift, per-sample broadcasting
            for name in ("scale", "shift"):
                p = arrays.get(name)
                self.register_buffer(name, None if p is None else
                                     torch.from_numpy(np.asarray(p, np.float32)))
        elif self.kind not in ("add", "reshape", "concat"):
            raise SystemExit(f"sj_worker: no SpikingJelly form for {self.kind} node "
                             f"{spec['name']!r}")
        self.shape = tuple(spec["shape"])
        self.axis = a.get("axis", 0)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.kind == "concat":  # per-sample axis; (T, B) come first
            t = max(x.shape[0] for x in xs)
            return torch.cat([x.expand(t, *x.shape[1:]) for x in xs], dim=self.axis + 2)
        if self.kind == "add":
            t = max(x.shape[0] for x in xs)
            out = xs[0].expand(t, *xs[0].shape[1:])
            for x in xs[1:]:
                out = out + x
            return out
        x = xs[0]
        if self.kind == "affine":
            if self.scale is not None:
                x = x * self.scale
            return x if self.shift is None else x + self.shift
        if self.kind == "reshape":
            return x.reshape(x.shape[0], x.shape[1], *self.shape)
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return self.op(x)


class Population(nn.Module):
    """IF neurons on current/θ (threshold 1), spikes × out_scale."""

    def __init__(self, spec: dict, arrays: dict[str, np.ndarray]) -> None:
        super().__init__()

        def t(name: str) -> torch.Tensor | None:
            v = arrays.get(name)
            return None if v is None else torch.from_numpy(np.asarray(v, np.float32))

        theta = t("threshold")
        self.register_buffer("inv_theta", 1.0 / theta)
        self.register_buffer("out_scale", t("out_scale"))
        bias, v0 = t("bias"), t("v0")
        self.bias = None if bias is None else bias
        self.v0 = None if v0 is None or not torch.any(v0 != 0) else v0 / theta
        soft = spec["attrs"]["reset"] == "subtract"
        self.neuron = neuron.IFNode(v_threshold=1.0, v_reset=None if soft else 0.0,
                                    step_mode="m")

    def forward(self, current: torch.Tensor, steps: int) -> torch.Tensor:
        current = current.expand(steps, *current.shape[1:])
        if self.bias is not None:
            current = current + self.bias
        current = current * self.inv_theta
        if self.v0 is not None:
            current = current.clone()
            current[0] += self.v0
        return self.neuron(current) * self.out_scale


class Net(nn.Module):
    def __init__(self, nodes: list[dict], arrays: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.nodes = nodes
        self.mods = nn.ModuleDict()
        for n in nodes:
            own = {k.rsplit("/", 1)[1]: v for k, v in arrays.items()  # node names hold "/"
                   if k.rsplit("/", 1)[0] == n["name"]}
            key = f"m{len(self.mods)}"
            n["key"] = key
            if n["kind"] == "if":
                self.mods[key] = Population(n, own)
            elif n["kind"] not in ("input", "readout"):
                self.mods[key] = Synapse(n, own)

    def forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {}
        out = None
        for n in self.nodes:
            ins = [values[i] for i in n["inputs"]]
            if n["kind"] == "input":
                values[n["name"]] = x[None]  # constant in time: (1, B, ...)
            elif n["kind"] == "if":
                values[n["name"]] = self.mods[n["key"]](ins[0], steps)
            elif n["kind"] == "readout":
                out = ins[0].expand(steps, *ins[0].shape[1:]).sum(0) / steps
            else:
                values[n["name"]] = self.mods[n["key"]](*ins)
        assert out is not None
        return out


def main() -> None:
    graph_path, x_path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 2)
    data = np.load(graph_path)
    nodes = json.loads(bytes(data["__graph__"]).decode())
    arrays = {k: data[k] for k in data.files if k != "__graph__"}
    net = Net(nodes, arrays).eval()
    x = torch.from_numpy(np.load(x_path).astype(np.float32))
    with torch.no_grad():
        net(x[:2], 2)  # warm-up
        for line in sys.stdin:
            if line.strip() != "run":
                raise SystemExit(f"sj_worker: unknown command {line.strip()!r}")
            functional.reset_net(net)
            t = time.perf_counter()
            y = net(x, steps)
            dt = time.perf_counter() - t
            print(json.dumps({"seconds": dt, "classes": y.reshape(len(x), -1).argmax(1).tolist(),
                              "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
