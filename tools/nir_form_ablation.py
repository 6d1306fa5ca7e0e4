"""Measure each choice of the default ``.nir`` form: undo one at a time, run every consumer.

    .venv/bin/python tools/nir_form_ablation.py [--models mlp,cnn] [-T 8,32]

Needs the consumer venvs of ``./dev nir-check``. From the default (generic) file of each bundled
model it writes variants that each undo one choice of docs/nir.md and runs every consumer on
each (``tools/nir_consumers.py``'s runner), printing one row per (model, variant) with the
accuracy at the largest T, or the first error:

* ``default``: the file as written;
* ``dotted names``: the NIR names ``n01.0.Conv`` instead of ``n01_0_Conv`` (same order);
* ``unsorted names``: ``input`` and ``output`` kept, the other names prefixed so that their
  alphabetical order is the reverse of the topological one;
* ``v_reset``: the zero ``v_reset`` of each ``IF`` kept in the file;
* ``Flatten``: the fully connected layers as ``Flatten(start_dim=0)`` + ``Affine`` (as before);
* ``AvgPool2d``: ``--nir-pool avg`` instead of ``SumPool2d``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nir_consumers import MODELS, READERS, ROOT, run_consumer  # noqa: E402

VARIANTS = ("default", "dotted names", "unsorted names", "v_reset", "Flatten", "AvgPool2d")


def _renamed(g: Any, rename: Any) -> Any:
    import nir

    nodes = {rename(k): v for k, v in g.nodes.items()}
    edges = [(rename(a), rename(b)) for a, b in g.edges]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=g.metadata)


def _with_flatten(g: Any) -> Any:
    """Full-size / 1x1 Conv2d layers back to Flatten(start_dim=0) + Affine, neurons 1-D."""
    import nir

    nodes: dict[str, Any] = {}
    edges = list(g.edges)
    flat_shape: dict[str, bool] = {}
    for k, v in g.nodes.items():
        out = getattr(v, "output_type", {}).get("output")
        if isinstance(v, nir.Conv2d) and out is not None and tuple(out[1:]) == (1, 1):
            w = np.asarray(v.weight)
            src = next(a for a, b in edges if b == k)
            if w.shape[2:] != (1, 1) or not flat_shape.get(src):
                f = f"{k}_flat"
                nodes[f] = nir.Flatten(input_type={"input": np.array(v.input_type["input"])},
                                       start_dim=0, end_dim=-1)
                edges = [(a, f) if b == k else (a, b) for a, b in edges] + [(f, k)]
            nodes[k] = nir.Affine(weight=w.reshape(w.shape[0], -1), bias=np.asarray(v.bias))
            flat_shape[k] = True
        elif isinstance(v, nir.IF) and np.asarray(v.r).ndim == 3 and v.r.shape[1:] == (1, 1):
            nodes[k] = nir.IF(r=v.r.reshape(-1), v_threshold=v.v_threshold.reshape(-1),
                              v_reset=v.v_reset.reshape(-1))
            flat_shape[k] = True
        elif isinstance(v, nir.Output) and tuple(v.output_type["output"][1:]) == (1, 1):
            nodes[k] = nir.Output(np.array([v.output_type["output"][0]]))
        else:
            nodes[k] = v
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=g.metadata)


def variants(snn: Any, work: Path) -> dict[str, Path]:
    import nir

    from onnx2snn.backends.nir import read_nir_file, write_nir

    base = write_nir(snn, work / "default.nir")
    g = read_nir_file(base)
    order = list(g.nodes)
    out = {"default": base}
    out["dotted names"] = _write(_renamed(g, lambda k: k.replace("_", ".", 1)
                                          if k.startswith("n") else k), work / "dotted.nir")
    out["unsorted names"] = _write(_renamed(g, lambda k: k if k in ("input", "output") else
                                            f"{'zyxwvutsrqpnm'[order.index(k)]}_{k}"),
                                   work / "unsorted.nir")
    nir.write(work / "v_reset.nir", g)
    out["v_reset"] = work / "v_reset.nir"
    out["Flatten"] = _write(_with_flatten(g), work / "flatten.nir")
    out["AvgPool2d"] = write_nir(snn, work / "avgpool.nir", pool="avg")
    return out


def _write(g: Any, path: Path) -> Path:
    """nir.write, then drop the zero v_reset as write_nir does (only one choice differs)."""
    import nir

    from onnx2snn.backends.nir import drop_zero_v_reset

    nir.write(path, g)
    drop_zero_v_reset(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("-T", "--timesteps", default="8,32")
    a = p.parse_args(argv)
    report = sorted({int(t) for t in a.timesteps.split(",")})
    from onnx2snn.convert import convert

    calib = np.load(ROOT / "models" / "digits_calib.npz")["x"]
    consumers = READERS["generic"]
    print("| model | variant | " + " | ".join(consumers) + " |")
    print("|---|---|" + "---|" * len(consumers))
    with tempfile.TemporaryDirectory(prefix="onnx2snn-nir-ablation-") as tmp:
        data = ROOT / "models" / "digits_test.npz"
        for model in a.models.split(","):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                snn = convert(ROOT / "models" / MODELS[model], calib).snn
            work = Path(tmp) / model
            work.mkdir()
            for name, path in variants(snn, work).items():
                cells = []
                for c in consumers:
                    r = run_consumer(c, path, data, report)
                    t = str(max(report))
                    cells.append(f"{r['accuracy'][t]:.2f}" if t in r.get("accuracy", {}) else
                                 ("load: " if r["load"] != "ok" else "run: ")
                                 + (r["load"] if r["load"] != "ok" else r["run"])[:70]
                                 .replace("|", "\\|"))
                print(f"| {model} | {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
