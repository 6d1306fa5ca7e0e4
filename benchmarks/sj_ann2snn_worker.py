"""The SpikingJelly side of accuracy_spikingjelly.py: runs in .venv-sj, never imports onnx2snn.

It reads an ANN graph exported by the driver (``bench_spikingjelly.export_graph``: JSON structure
and arrays in one .npz; the graph onnx2snn's frontend reads from the ONNX file, BatchNorm
folded), builds the same network as a PyTorch module (Conv2d, Linear, AvgPool2d, MaxPool2d,
residual sums, concatenation, flatten; every ReLU an ``nn.ReLU``, which is what SpikingJelly's
converter replaces; a ReLU6/Clip ceiling is dropped, since the converter refuses ``clamp``,
``Hardtanh`` and ``ReLU6`` nodes, so the PyTorch ANN's own accuracy is printed), checks its accuracy, then
converts it with SpikingJelly's own ``ann2snn.Converter`` (``RateCodingRecipe``) in each mode
asked for, calibrated on the driver's calibration images, and runs the converted network as
SpikingJelly's examples do (single-step, the analog image every step, the outputs summed over
the steps; ``functional.reset_net`` before each batch). Prints one JSON line: the ANN's accuracy
and, per mode, the accuracy at every step 1..T.

    python sj_ann2snn_worker.py GRAPH.npz CALIB.npy TEST_X.npy TEST_Y.npy T MODE[,MODE...]

Modes: ``max`` (the converter's default, ``mode="Max"``), ``99.9%`` (the robust normalization
of SpikingJelly's MNIST example), ``channel-99.9%-half`` (``channel_wise=True``,
``half_threshold=True``: one λ per channel and a half-threshold start, SpikingJelly 2's most
elaborate rate-coding option).
"""

from __future__ import annotations

import copy
import json
import sys

import numpy as np
import torch
from spikingjelly.activation_based import ann2snn, functional
from torch import nn
from torch.nn import functional as F  # noqa: N812


class Node(nn.Module):
    """One ANN node over (B, ...) tensors."""

    def __init__(self, spec: dict, arrays: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.kind = spec["kind"]
        a = spec["attrs"]
        w, b = arrays.get("weight"), arrays.get("bias")
        self.pad: tuple[int, ...] | None = None
        self.op: nn.Module | None = None
        if self.kind in ("conv", "avgpool", "maxpool"):
            top, left, bottom, right = a["pads"]
            sym = top == bottom and left == right
            if not sym:
                self.pad = (left, right, top, bottom)
            padding = (top, left) if sym else 0
        if self.kind == "conv":
            o, cg, kh, kw = w.shape
            op = nn.Conv2d(cg * a["groups"], o, (kh, kw), stride=tuple(a["strides"]),
                           padding=padding, dilation=tuple(a["dilations"]), groups=a["groups"],
                           bias=b is not None)
            op.weight.data = torch.from_numpy(np.ascontiguousarray(w, np.float32))
            if b is not None:
                op.bias.data = torch.from_numpy(b.astype(np.float32))
            self.op = op
        elif self.kind == "dense":
            op = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            op.weight.data = torch.from_numpy(np.ascontiguousarray(w, np.float32))
            if b is not None:
                op.bias.data = torch.from_numpy(b.astype(np.float32))
            self.op = op
        elif self.kind == "avgpool":
            self.op = nn.AvgPool2d(tuple(a["kernel"]), tuple(a["strides"]), padding=padding,
                                   ceil_mode=a["ceil_mode"],
                                   count_include_pad=a["count_include_pad"])
        elif self.kind == "maxpool":
            self.op = nn.MaxPool2d(tuple(a["kernel"]), tuple(a["strides"]), padding=padding,
                                   dilation=tuple(a["dilations"]), ceil_mode=a["ceil_mode"])
        elif self.kind == "relu":
            # a ceiling (ReLU6, Clip) is dropped: the converter replaces nn.ReLU only and
            # refuses torch.clamp, nn.Hardtanh and nn.ReLU6 ("does not support module node")
            self.op = nn.ReLU()
        elif self.kind not in ("add", "reshape", "concat"):
            raise SystemExit(f"sj_ann2snn_worker: no PyTorch form for {self.kind} node "
                             f"{spec['name']!r}")
        self.shape = tuple(spec["shape"])
        self.axis = a.get("axis", 0)


class Net(nn.Module):
    """The ANN graph in node order; fx-traceable (the node list is fixed)."""

    def __init__(self, nodes: list[dict], arrays: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.specs = [(n["name"], n["kind"], tuple(n["inputs"])) for n in nodes]
        self.mods = nn.ModuleDict()
        self.keys: dict[str, str] = {}
        for n in nodes:
            if n["kind"] in ("input", "readout"):
                continue
            own = {k.rsplit("/", 1)[1]: v for k, v in arrays.items()  # node names hold "/"
                   if k.rsplit("/", 1)[0] == n["name"]}
            key = f"n{len(self.mods)}"
            self.keys[n["name"]] = key
            node = Node(n, own)
            self.mods[key] = node.op if node.op is not None else nn.Identity()
            # what forward needs besides the module
            setattr(self, f"{key}_meta", (node.shape, node.axis, node.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {}
        last = x
        for name, kind, inputs in self.specs:
            if kind == "input":
                values[name] = x
                continue
            key = self.keys[name]
            shape, axis, pad = getattr(self, f"{key}_meta")
            ins = [values[i] for i in inputs]
            if kind == "add":
                out = ins[0]
                for other in ins[1:]:
                    out = out + other
            elif kind == "concat":
                out = torch.cat(ins, dim=axis + 1)
            elif kind == "reshape":
                out = ins[0].reshape(-1, *shape)
            else:
                h = ins[0] if pad is None else F.pad(ins[0], pad)
                out = self.mods[key](h)
            values[name] = out
            last = out
        return last


def recipe(mode: str, loader: list[torch.Tensor]) -> ann2snn.RateCodingRecipe:
    if mode == "max":
        return ann2snn.RateCodingRecipe(dataloader=loader)  # the default: mode="Max"
    if mode == "99.9%":
        return ann2snn.RateCodingRecipe(dataloader=loader, mode="99.9%")
    if mode == "channel-99.9%-half":
        return ann2snn.RateCodingRecipe(dataloader=loader, mode="99.9%", channel_wise=True,
                                        half_threshold=True)
    raise SystemExit(f"sj_ann2snn_worker: unknown mode {mode!r}")


def accuracy_per_step(snn: nn.Module, x: torch.Tensor, y: np.ndarray, steps: int,
                      batch: int = 100) -> list[float]:
    """Accuracy of the summed outputs after each step 1..steps."""
    correct = np.zeros(steps)
    with torch.no_grad():
        for s in range(0, len(x), batch):
            functional.reset_net(snn)
            xb, yb = x[s:s + batch], y[s:s + batch]
            out = torch.zeros(0)
            for t in range(steps):
                o = snn(xb)
                out = o if t == 0 else out + o
                correct[t] += float((out.argmax(1).numpy() == yb).sum())
    return (correct / len(x)).tolist()


def main() -> None:
    graph_path, calib_path, x_path, y_path, steps, modes = sys.argv[1:7]
    torch.set_num_threads(int(sys.argv[7]) if len(sys.argv) > 7 else 2)
    torch.manual_seed(0)
    data = np.load(graph_path)
    nodes = json.loads(bytes(data["__graph__"]).decode())
    arrays = {k: data[k] for k in data.files if k != "__graph__"}
    ann = Net(nodes, arrays).eval()
    calib = torch.from_numpy(np.load(calib_path).astype(np.float32))
    x = torch.from_numpy(np.load(x_path).astype(np.float32))
    y = np.load(y_path)
    with torch.no_grad():
        ann_acc = float((ann(x).argmax(1).numpy() == y).mean())
    loader = [calib[s:s + 64] for s in range(0, len(calib), 64)]
    result: dict[str, object] = {"ann": ann_acc, "torch": torch.__version__, "modes": {}}
    for mode in modes.split(","):
        snn = ann2snn.Converter(recipe=recipe(mode, loader), device="cpu").convert(
            copy.deepcopy(ann)).eval()
        result["modes"][mode] = accuracy_per_step(snn, x, y, int(steps))  # type: ignore[index]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
