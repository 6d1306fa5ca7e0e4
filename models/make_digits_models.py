"""Train small ANNs on scikit-learn's digits data and export them to ONNX.

This script produces the reference models and data that onnx2snn's tests and
demos use, so that those need neither torch nor a download:

* ``digits_{train,test,calib}.npz``: the 8x8 digits (pixels scaled to [0, 1],
  float32 ``x`` of shape (N, 1, 8, 8), int64 ``y`` of shape (N,)), split
  70/30 with a fixed stratified split; ``calib`` is the first 256 training
  images.
* ``digits_{mlp,cnn,resnet,resnet_avg,cnn_clip,dwsep,dwsep_relu6}.onnx``: seven small networks, each
  with input ``input`` (batch, 1, 8, 8), dynamic batch, and output ``logits``
  (batch, 10) (raw logits, no softmax), ONNX opset 17, weights inside the file.
* ``MODELS.md``: a table of the models (architecture, ONNX ops, parameter
  count, onnxruntime test accuracy).

Every exported model is checked with ``onnx.checker``, run with onnxruntime on
the whole test set at batch sizes 1 and 7, and compared with torch's output.

Run it from a throwaway virtual environment outside the repository (see
``models/README.md`` for the exact commands)::

    /tmp/torchenv/bin/python models/make_digits_models.py

It is deterministic (fixed seeds, deterministic torch algorithms) and takes a
few minutes on two CPU cores. ``--out DIR`` writes somewhere other than the
folder this script lives in.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
from onnx import numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
OPSET = 17
NUM_CLASSES = 10
CALIB_SIZE = 256
BATCH_SIZE = 32
QCFS_LEVELS = 8
ORT_BATCH_SIZES = (1, 7)
MAX_ABS_DIFF = 1e-4


# --------------------------------------------------------------------------- data


def set_seeds(seed: int = SEED) -> None:
    """Seed every random number generator the training touches."""
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_splits() -> dict[str, dict[str, np.ndarray]]:
    """Digits scaled to [0, 1] as (N, 1, 8, 8) float32, split into train/test/calib."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=SEED, stratify=y
    )
    return {
        "train": {"x": x_train, "y": y_train},
        "test": {"x": x_test, "y": y_test},
        "calib": {"x": x_train[:CALIB_SIZE], "y": y_train[:CALIB_SIZE]},
    }


def save_splits(splits: dict[str, dict[str, np.ndarray]], out_dir: Path) -> None:
    for name, arrays in splits.items():
        path = out_dir / f"digits_{name}.npz"
        np.savez_compressed(path, **arrays)
        print(f"wrote {path.name}: x {arrays['x'].shape} {arrays['x'].dtype}, "
              f"y {arrays['y'].shape} {arrays['y'].dtype}")


# ------------------------------------------------------------------------- layers


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, groups: int = 1,
                 act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Conv (bias-free, 'same' padding) -> BatchNorm -> ReLU (or ``act``)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        act(),
    )


class FloorSTE(torch.autograd.Function):
    """floor() whose gradient is passed straight through."""

    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad


class QCFS(nn.Module):
    """Quantization-clip-floor-shift activation (Bu et al., ICLR 2022).

    y = lambda * clamp(floor(x * L / lambda + 0.5) / L, 0, 1), with a trainable
    ceiling lambda and a straight-through floor.
    """

    def __init__(self, levels: int = QCFS_LEVELS, init_ceiling: float = 4.0):
        super().__init__()
        self.levels = levels
        self.ceiling = nn.Parameter(torch.tensor(init_ceiling))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = FloorSTE.apply(x * self.levels / self.ceiling + 0.5) / self.levels
        return self.ceiling * torch.clamp(steps, 0.0, 1.0)

    def as_clip(self) -> ClipReLU:
        return ClipReLU(float(self.ceiling.detach()))


class ClipReLU(nn.Module):
    """ReLU clipped at a constant ceiling; exports as ONNX Clip(x, 0, ceiling)."""

    def __init__(self, ceiling: float):
        super().__init__()
        self.ceiling = ceiling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, 0.0, self.ceiling)

    def extra_repr(self) -> str:
        return f"ceiling={self.ceiling:.4f}"


def replace_qcfs_with_clip(model: nn.Module) -> nn.Module:
    """Swap every QCFS activation for the plain clip it becomes at export."""
    for name, child in model.named_children():
        if isinstance(child, QCFS):
            setattr(model, name, child.as_clip())
        else:
            replace_qcfs_with_clip(child)
    return model


# ------------------------------------------------------------------------- models


def make_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128), nn.ReLU(),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, NUM_CLASSES),
    )


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, NUM_CLASSES),
    )


def make_cnn_qcfs() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), QCFS(), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), QCFS(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 64), QCFS(),
        nn.Linear(64, NUM_CLASSES),
    )


class ResidualBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + skip(x)); skip is a 1x1 conv+BN if c_in != c_out."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(c_in, c_out),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.skip(x))


def make_resnet(pool: type[nn.Module] = nn.MaxPool2d) -> nn.Module:
    return nn.Sequential(
        conv_bn_relu(1, 16),
        ResidualBlock(16, 16),
        pool(2),
        ResidualBlock(16, 32),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, NUM_CLASSES),
    )


def make_resnet_avg() -> nn.Module:
    """digits_resnet with average pooling: max pooling has no Loihi synapse form, and a net
    trained with max pooling does not classify once its pool is replaced by an average."""
    return make_resnet(nn.AvgPool2d)


def make_dwsep() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        conv_bn_relu(16, 16, kernel=3, groups=16),
        conv_bn_relu(16, 32, kernel=1),
        nn.AvgPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.ReLU(),
        nn.Conv2d(32, 32, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, NUM_CLASSES),
    )


def make_dwsep_relu6() -> nn.Module:
    return nn.Sequential(
        conv_bn_relu(1, 16, act=nn.ReLU6),
        conv_bn_relu(16, 16, kernel=3, groups=16, act=nn.ReLU6),
        conv_bn_relu(16, 32, kernel=1, act=nn.ReLU6),
        nn.AvgPool2d(2),
        conv_bn_relu(32, 32, kernel=3, groups=32, act=nn.ReLU6),
        conv_bn_relu(32, 32, kernel=1, act=nn.ReLU6),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, NUM_CLASSES),
    )


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    build: Callable[[], nn.Module]
    epochs: int
    lr: float = 3e-3
    required_ops: frozenset[str] = frozenset()


SPECS = (
    ModelSpec(
        "digits_mlp",
        "Flatten -> Linear(64,128) -> ReLU -> Linear(128,64) -> ReLU -> Linear(64,10)",
        make_mlp, epochs=40, lr=1e-3,
        required_ops=frozenset({"Gemm", "Relu"}),
    ),
    ModelSpec(
        "digits_cnn",
        "Conv(1->16,3x3) -> BN -> ReLU -> AvgPool 2x2 -> Conv(16->32,3x3) -> BN -> ReLU -> "
        "AvgPool 2x2 -> Flatten -> Linear(128,64) -> ReLU -> Linear(64,10)",
        make_cnn, epochs=40,
        required_ops=frozenset({"Conv", "BatchNormalization", "AveragePool"}),
    ),
    ModelSpec(
        "digits_resnet",
        "stem Conv(1->16,3x3)+BN+ReLU -> residual block 16->16 (Conv-BN-ReLU-Conv-BN, "
        "+identity skip, ReLU) -> MaxPool 2x2 -> residual block 16->32 (1x1 Conv+BN "
        "projection skip) -> GlobalAvgPool -> Linear(32,10); convs bias-free",
        make_resnet, epochs=40,
        required_ops=frozenset({"BatchNormalization", "Add", "MaxPool", "GlobalAveragePool"}),
    ),
    ModelSpec(
        "digits_resnet_avg",
        "as digits_resnet with AvgPool 2x2 instead of MaxPool 2x2 (for Loihi, where max "
        "pooling has no synapse form)",
        make_resnet_avg, epochs=40,
        required_ops=frozenset({"BatchNormalization", "Add", "AveragePool", "GlobalAveragePool"}),
    ),
    ModelSpec(
        "digits_cnn_clip",
        f"as digits_cnn without BN, every hidden ReLU a clipped ReLU Clip(0, lambda) "
        f"with a trained per-layer lambda (trained as QCFS, L={QCFS_LEVELS}, "
        f"exported as Clip)",
        make_cnn_qcfs, epochs=60,
        required_ops=frozenset({"Clip"}),
    ),
    ModelSpec(
        "digits_dwsep",
        "Conv(1->16,3x3)+ReLU -> depthwise Conv 3x3 g=16 +BN+ReLU -> pointwise "
        "Conv(16->32,1x1)+BN+ReLU -> AvgPool 2x2 -> depthwise Conv 3x3 g=32 +ReLU -> "
        "pointwise Conv(32->32,1x1)+ReLU -> GlobalAvgPool -> Linear(32,10)",
        make_dwsep, epochs=60,
        required_ops=frozenset({"BatchNormalization", "GlobalAveragePool"}),
    ),
    ModelSpec(
        "digits_dwsep_relu6",
        "as digits_dwsep with ReLU6 (Clip(0, 6)) after every conv and BN after every conv: "
        "Conv(1->16,3x3) -> depthwise 3x3 g=16 -> pointwise 16->32 -> AvgPool 2x2 -> depthwise "
        "3x3 g=32 -> pointwise 32->32 -> GlobalAvgPool -> Linear(32,10); convs bias-free",
        make_dwsep_relu6, epochs=60,
        required_ops=frozenset({"BatchNormalization", "Clip", "GlobalAveragePool"}),
    ),
)


# ---------------------------------------------------------------------- training


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float,
          augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
          log_every: int = 10) -> nn.Module:
    """Adam with a cosine learning-rate decay, minibatches shuffled from a seeded generator.

    ``augment(batch, generator)``, if given, transforms each training minibatch (drawing its
    randomness from the same seeded generator, so the run stays deterministic).
    """
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(xs), generator=generator)
        total = 0.0
        for start in range(0, len(xs), BATCH_SIZE):
            idx = order[start:start + BATCH_SIZE]
            optimizer.zero_grad()
            batch = xs[idx] if augment is None else augment(xs[idx], generator)
            loss = loss_fn(model(batch), ys[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        scheduler.step()
        if (epoch + 1) % log_every == 0 or epoch + 1 == epochs:
            print(f"  epoch {epoch + 1:3d}/{epochs}  loss {total / len(xs):.4f}")
    return model.eval()


@torch.no_grad()
def torch_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return model.eval()(torch.from_numpy(x)).numpy()


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == y).mean())


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------ export


def export_onnx(model: nn.Module, path: Path, sample_shape: tuple[int, ...] = (1, 8, 8)) -> None:
    """Export with the TorchScript exporter, keeping BatchNormalization nodes.

    ``sample_shape`` is one input's shape (batch excluded); the batch axis is dynamic.

    TrainingMode.PRESERVE on a model in eval mode exports inference-mode BN
    (training_mode=0) but skips the exporter's Conv+BN fusion, while constant
    folding still cleans up the rest of the graph.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*constant folding be turned off.*")
        torch.onnx.export(
            model.eval(),
            (torch.zeros((1, *sample_shape)),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
            training=torch.onnx.TrainingMode.PRESERVE,
        )
    onnx_model = onnx.load(str(path))
    tidy_graph(onnx_model.graph)
    onnx.save(onnx_model, str(path))


def tidy_graph(graph: onnx.GraphProto) -> None:
    """Turn Constant nodes and Identity-of-initializer nodes into plain initializers.

    The exporter emits Clip bounds as Constant nodes and, where two parameters
    hold equal values (e.g. an untrained BN's running_var and weight), aliases
    one to the other with an Identity node; storing both as initializers leaves
    only computing nodes in the graph.
    """
    initializers = {init.name: init for init in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Constant":
            value = numpy_helper.to_array(onnx.helper.get_attribute_value(node.attribute[0]))
        elif node.op_type == "Identity" and node.input[0] in initializers:
            value = numpy_helper.to_array(initializers[node.input[0]])
        else:
            kept.append(node)
            continue
        tensor = numpy_helper.from_array(value, name=node.output[0])
        graph.initializer.append(tensor)
        initializers[tensor.name] = tensor
    del graph.node[:]
    graph.node.extend(kept)


# ------------------------------------------------------------------ verification


def op_counts(onnx_model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(node.op_type for node in onnx_model.graph.node)


def format_ops(counts: collections.Counter) -> str:
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(counts.items()))


def ort_logits(session: ort.InferenceSession, x: np.ndarray, batch_size: int) -> np.ndarray:
    chunks = [session.run(["logits"], {"input": x[i:i + batch_size]})[0]
              for i in range(0, len(x), batch_size)]
    return np.concatenate(chunks)


def verify_onnx(path: Path, spec: ModelSpec, expected: np.ndarray, x: np.ndarray,
                y: np.ndarray) -> dict:
    """Check the file, run it with onnxruntime, compare with torch's logits."""
    onnx_model = onnx.load(str(path))
    onnx.checker.check_model(onnx_model, full_check=True)
    counts = op_counts(onnx_model)
    missing = spec.required_ops - set(counts)
    assert not missing, f"{path.name}: expected ops {sorted(missing)} missing"
    assert not {"Constant", "Identity"} & set(counts), f"{path.name}: untidy graph"
    assert all(i.data_location != onnx.TensorProto.EXTERNAL for i in onnx_model.graph.initializer)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    results = {}
    for batch_size in ORT_BATCH_SIZES:
        logits = ort_logits(session, x, batch_size)
        assert logits.shape == (len(x), NUM_CLASSES)
        diff = float(np.abs(logits - expected).max())
        assert diff < MAX_ABS_DIFF, f"{path.name}: batch {batch_size} differs by {diff}"
        results[batch_size] = (accuracy(logits, y), diff)
    accuracies = {acc for acc, _ in results.values()}
    assert len(accuracies) == 1, f"{path.name}: accuracy depends on batch size {results}"
    print(f"  onnx ops: {format_ops(counts)}")
    for batch_size, (acc, diff) in results.items():
        print(f"  onnxruntime batch {batch_size}: accuracy {acc:.4f}, "
              f"max |ort - torch| {diff:.2e}")
    return {"ops": counts, "ort_accuracy": accuracies.pop(),
            "max_abs_diff": max(d for _, d in results.values()),
            "size": path.stat().st_size}


# ---------------------------------------------------------------------- pipeline


def build_model(spec: ModelSpec, splits: dict) -> tuple[nn.Module, dict]:
    """Train one model; return its export-ready form and torch-side facts."""
    set_seeds()
    model = train(spec.build(), splits["train"]["x"], splits["train"]["y"], spec.epochs, spec.lr)
    facts = {
        "params": parameter_count(model),
        "torch_accuracy": accuracy(torch_logits(model, splits["test"]["x"]), splits["test"]["y"]),
    }
    model = replace_qcfs_with_clip(model)
    ceilings = [m.ceiling for m in model.modules() if isinstance(m, ClipReLU)]
    if ceilings:
        facts["ceilings"] = ceilings
        print(f"  QCFS test accuracy {facts['torch_accuracy']:.4f}; "
              f"clip ceilings {', '.join(f'{c:.3f}' for c in ceilings)}")
    return model, facts


def make_one(spec: ModelSpec, splits: dict, out_dir: Path) -> dict:
    print(f"== {spec.name}")
    start = time.perf_counter()
    model, facts = build_model(spec, splits)
    x_test, y_test = splits["test"]["x"], splits["test"]["y"]
    expected = torch_logits(model, x_test)
    path = out_dir / f"{spec.name}.onnx"
    export_onnx(model, path)
    facts.update(verify_onnx(path, spec, expected, x_test, y_test))
    print(f"  {path.name}: {facts['size']} bytes, {facts['params']} parameters, "
          f"{time.perf_counter() - start:.1f} s")
    return facts


MODELS_MD_TITLE = [
    "# Reference models",
    "",
    "Each section is written by the script it names (`models/make_digits_models.py`,",
    "`models/make_mnist_models.py`), which rewrites only its own section; do not edit by hand.",
    "",
]


def write_models_md_section(section: str, lines: list[str], out_dir: Path) -> None:
    """Replace (or append) the section ``section`` of ``out_dir/MODELS.md`` with ``lines``.

    A section runs from ``<!-- begin NAME -->`` to ``<!-- end NAME -->``; the rest of the file
    (the other scripts' sections) is kept as it is.
    """
    path = out_dir / "MODELS.md"
    begin, end = f"<!-- begin {section} -->", f"<!-- end {section} -->"
    block = "\n".join([begin, *lines, end])
    text = path.read_text() if path.exists() else "\n".join(MODELS_MD_TITLE)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
    print(f"wrote section {section!r} of {path}")


def write_models_md(results: dict[str, dict], splits: dict, out_dir: Path) -> None:
    n_train, n_test = len(splits["train"]["y"]), len(splits["test"]["y"])
    lines = [
        "## Digits reference models",
        "",
        "Generated by `models/make_digits_models.py` (see `models/README.md`).",
        "Data: scikit-learn digits, pixels / 16, split",
        f"{n_train} train / {n_test} test (`train_test_split(test_size=0.3, "
        f"random_state={SEED}, stratify=y)`).",
        f"All models: input `input` (batch, 1, 8, 8) float32, output `logits` "
        f"(batch, 10), ONNX opset {OPSET}, exported with torch {torch.__version__.split('+')[0]} "
        f"(TorchScript exporter), onnx {onnx.__version__}.",
        "Parameters are torch's trainable parameters (BN running statistics not counted).",
        "",
        "| file | architecture | ONNX ops | parameters | onnxruntime test accuracy |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for spec in SPECS:
        r = results[spec.name]
        arch = spec.description
        if "ceilings" in r:
            arch += ("; lambdas " + ", ".join(f"{c:.3f}" for c in r["ceilings"])
                     + f"; QCFS-quantized torch test accuracy {r['torch_accuracy'] * 100:.2f}%")
        lines.append(f"| `{spec.name}.onnx` | {arch} | {format_ops(r['ops'])} | "
                     f"{r['params']:,} | {r['ort_accuracy'] * 100:.2f}% |")
    write_models_md_section("digits", lines, out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="output folder (default: the folder of this script)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    torch.use_deterministic_algorithms(True)
    # One thread: results do not depend on the machine's core count, and the
    # tiny models train no slower than with several (faster on a busy machine).
    torch.set_num_threads(1)
    splits = load_splits()
    save_splits(splits, args.out)
    results = {spec.name: make_one(spec, splits, args.out) for spec in SPECS}
    write_models_md(results, splits, args.out)

    print("\nsummary")
    for name, r in results.items():
        print(f"  {name + '.onnx':22s} {r['size']:7d} B  params {r['params']:6d}  "
              f"ort acc {r['ort_accuracy']:.4f}  max diff {r['max_abs_diff']:.1e}  "
              f"ops {format_ops(r['ops'])}")


if __name__ == "__main__":
    main()
