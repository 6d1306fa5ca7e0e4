"""Do the released NIR consumers run onnx2snn's ``.nir`` files as written? Measure it.

    ./dev nir-check [--models mlp,cnn] [--recipes default,zero+bc] [-T 8,32] [--check]
                    [--write-doc] [--json FILE]

Runs in the project's venv (conversion, the files, onnx2snn's own reading of them) and calls
``tools/nir_consumer_run.py`` inside the consumers' virtualenvs, which ``./dev nir-check``
builds: ``.venv-nir`` (snnTorch, Norse, spyx, Rockpool on nir 1.0.8 / nirtorch 2.6, from
``tools/nir-requirements.txt``) and ``.venv-nir-old`` (Sinabs, which pins nir 1.0.4 / nirtorch
2.0.2, from ``tools/nir-old-requirements.txt``). For each bundled model and recipe
(``RECIPES``) it converts the ONNX file on ``models/digits_calib.npz``, writes one ``.nir`` per
``--nir-for`` form (or records ``check``'s refusal), and for each file and consumer reports
load / run / accuracy (%) at each T on ``models/digits_test.npz``, next to the ANN (onnxruntime
on the ONNX file) and to what the file means (onnx2snn's simulation of the file as read back
with ``nir.read``; for a file read with nir 1.0.4's IF, reset by subtraction).

``--check`` (CI) exits 1 unless, with ``convert``'s default conversion (``--recipes convert``: the
recipe searched for the form's neuron, as ``onnx2snn convert --target nir --nir-for FORM`` makes
it; else the library's default recipe), every consumer expected to run the
MLP and CNN files (``EXPECTED``) loads and runs them, within ``TOLERANCE_PP`` of what its own
neuron means at the largest T (reset to zero: the file as nir 1.0.8 reads it; reset by
subtraction: as nir 1.0.4 reads it).
``--write-doc`` writes the table into docs/nir.md between its markers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "nir.md"
START, END = "<!-- nir-consumers:start -->", "<!-- nir-consumers:end -->"
MODELS = {"mlp": "digits_mlp.onnx", "cnn": "digits_cnn.onnx",
          "resnet_avg": "digits_resnet_avg.onnx"}
VENVS = {"snntorch": ".venv-nir", "norse": ".venv-nir", "spyx": ".venv-nir",
         "rockpool": ".venv-nir", "sinabs": ".venv-nir-old"}
# Which consumers read each form's file; a form names the consumer it is written for.
READERS = {"generic": ("snntorch", "norse", "spyx", "rockpool", "sinabs"),
           "sinabs": ("sinabs",), "snntorch": ("snntorch",), "norse": ("norse",),
           "spyx": ("spyx",)}
# How each consumer's neuron resets when it runs our files (measured; docs/nir.md).
CONSUMER_RESET = {"norse": "zero", "snntorch": "zero", "sinabs": "subtract",
                  "spyx": "subtract", "rockpool": "-"}
# (form, consumer) pairs that must load and run feed-forward nets (CI, --check).
EXPECTED = {("generic", "norse"), ("generic", "spyx"), ("generic", "sinabs"),
            ("sinabs", "sinabs"), ("snntorch", "snntorch"), ("norse", "norse"),
            ("spyx", "spyx")}
TOLERANCE_PP = 1.5
# Conversion recipes measured: name -> (Recipe arguments, forms written, consumers run). The
# default recipe is balanced for reset by subtraction; reset to zero with bias correction suits
# the consumers whose neuron resets to zero (Norse, snnTorch).
ALL = ("snntorch", "norse", "spyx", "rockpool", "sinabs")
RECIPES: dict[str, tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]] = {
    "default": ({}, ("generic", "sinabs", "snntorch", "norse", "spyx"), ALL),
    "zero+bc": ({"reset": "zero", "bias_correction": True}, ("generic", "snntorch"),
                ("norse", "snntorch")),
    # what `onnx2snn convert --target nir --nir-for FORM` makes by default: the recipe searched
    # for the form's neuron profile (reset to zero; Sinabs: reset by subtraction)
    "convert": ({}, ("generic", "sinabs", "snntorch", "norse", "spyx"), ALL),
}


def _accuracy(pred: np.ndarray, y: np.ndarray, report: list[int]) -> dict[str, float]:
    return {str(t): float(100.0 * np.mean(np.argmax(pred[t - 1], -1) == y)) for t in report}


def measure_model(model: str, recipe: str, report: list[int], limit: int | None,
                  work: Path) -> list[dict[str, Any]]:
    """One row per (form, consumer) for one bundled model and recipe, and one per refused form."""
    import nir

    from onnx2snn.backends.nir import check_nir, from_nir, write_nir
    from onnx2snn.backends.nir.export import NIR_FORMS
    from onnx2snn.backends.numpy import simulate
    from onnx2snn.convert import Recipe, convert
    from onnx2snn.convert.auto import search_recipe
    from onnx2snn.convert.profiles import profile_for
    from onnx2snn.frontend import onnx_to_ann
    from onnx2snn.oracle import onnxruntime_outputs

    onnx = ROOT / "models" / MODELS[model]
    calib = np.load(ROOT / "models" / "digits_calib.npz")["x"]
    test = np.load(ROOT / "models" / "digits_test.npz")
    x, y = test["x"][:limit], test["y"][:limit]
    data = work / "test.npz"
    np.savez(data, x=x, y=y)
    snns: dict[str, Any] = {}  # the converted network, per neuron profile

    def converted(form: str) -> Any:
        profile = profile_for("nir", nir_for=form) if recipe == "convert" else None
        key = profile.name if profile is not None else recipe
        if key not in snns:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if profile is None:
                    snns[key] = convert(onnx, calib, Recipe(**RECIPES[recipe][0])).snn
                else:
                    snns[key] = search_recipe(onnx_to_ann(onnx), calib, profile,
                                              profile.recipe)[0].snn
        return snns[key]

    ann = float(100.0 * np.mean(np.argmax(onnxruntime_outputs(onnx, x), -1) == y))
    rows = []
    for form in RECIPES[recipe][1]:
        assert form in NIR_FORMS
        snn = converted(form)
        problems = check_nir(snn, form=form)
        if problems:
            rows.append({"model": model, "recipe": recipe, "form": form,
                         "consumer": "(onnx2snn check)", "load": "refused: " + problems[0],
                         "run": "-", "accuracy": {}, "ann": ann})
            continue
        (work / form).mkdir()
        path = write_nir(snn, work / form / "network.nir", form=form)
        # what the file means: the same network's generic file read with nir 1.0.8's IF (reset
        # to zero), and with 1.0.4's (reset by subtraction)
        generic = work / form / "generic.nir"
        g = nir.read(write_nir(snn, generic, form="generic"))
        means: dict[str, dict[str, float]] = {}
        for reset in ("zero", "subtract"):
            g.metadata["if_reset"] = reset
            res = simulate(from_nir(g), x, max(report), dtype=np.float64)
            means[reset] = _accuracy(next(iter(res.predictions.values())), y, report)
        for consumer in READERS[form]:
            if consumer not in RECIPES[recipe][2]:
                continue
            row = run_consumer(consumer, path, data, report)
            row.update(model=model, recipe=recipe, form=form, ann=ann)
            row["expected"] = means.get(CONSUMER_RESET[consumer])
            rows.append(row)
    return rows


def run_consumer(consumer: str, path: Path, data: Path, report: list[int]) -> dict[str, Any]:
    python = ROOT / VENVS[consumer] / "bin" / "python"
    if not python.exists():
        return {"consumer": consumer, "load": f"no {VENVS[consumer]}: run ./dev nir-check",
                "run": "-", "accuracy": {}}
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
               JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
    cmd = [str(python), str(ROOT / "tools" / "nir_consumer_run.py"), consumer, str(path),
           "--data", str(data), "-T", ",".join(map(str, report))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"consumer": consumer, "load": f"runner failed: {tail}", "run": "-",
                "accuracy": {}}
    out: dict[str, Any] = json.loads(lines[-1])
    out.pop("trace", None)
    return out


def _cell(value: str) -> str:
    return value.replace("|", "\\|")


def table(rows: list[dict[str, Any]], report: list[int]) -> str:
    head = (["model", "recipe", "file (`--nir-for`)", "consumer (versions)", "load", "run"]
            + [f"T={t}" for t in report] + [f"file means, T={max(report)}", "ANN"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 6 + "---:|" * (len(report) + 2)]
    for r in rows:
        v = r.get("versions", {})
        pkg = r["consumer"]
        ver = ", ".join(f"{k} {v[k]}" for k in (pkg, "nir", "nirtorch") if k in v)
        acc = [f"{r['accuracy'][str(t)]:.2f}" if str(t) in r["accuracy"] else "-" for t in report]
        means = r.get("expected") or {}
        mean = f"{means[str(max(report))]:.2f}" if str(max(report)) in means else "-"
        lines.append("| " + " | ".join(
            [r["model"], r["recipe"], r["form"], _cell(f"{pkg} ({ver})" if ver else pkg),
             _cell(r["load"]), _cell(r["run"])] + acc + [mean, f"{r['ann']:.2f}"]) + " |")
    return "\n".join(lines) + "\n"


def failures(rows: list[dict[str, Any]], report: list[int]) -> list[str]:
    """Every expected (form, consumer) pair of the MLP and CNN (convert's default conversion when
    measured, else the library's default recipe) that did not run the file within
    ``TOLERANCE_PP`` of what it means for its neuron, or has no row at all."""
    bad = []
    t = str(max(report))
    checked = "convert" if any(r["recipe"] == "convert" for r in rows) else "default"
    found = {(r["model"], r["form"], r["consumer"]): r for r in rows if r["recipe"] == checked}
    models = sorted({r["model"] for r in rows if r["model"] in ("mlp", "cnn")})
    for model in models:
        for form, consumer in sorted(EXPECTED):
            where = f"{model} --nir-for {form} in {consumer}"
            r = found.get((model, form, consumer))
            if r is None:
                refused = found.get((model, form, "(onnx2snn check)"))
                bad.append(f"{where}: not run" + (f" ({refused['load']})" if refused else ""))
            elif r["load"] != "ok" or r["run"] != "ok":
                bad.append(f"{where}: load {r['load']}; run {r['run']}")
            elif abs(r["accuracy"][t] - r["expected"][t]) > TOLERANCE_PP:
                bad.append(f"{where}: {r['accuracy'][t]:.2f}% at T={t}, the file means "
                           f"{r['expected'][t]:.2f}% for its neuron")
    return bad


def write_doc(text: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    if START not in doc or END not in doc:
        raise SystemExit(f"{DOC} has no {START} ... {END} block")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{text}{END}{tail}", encoding="utf-8")
    print(f"wrote the consumer table into {DOC}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mlp,cnn,resnet_avg",
                   help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--recipes", default="convert,default,zero+bc",
                   help=f"comma-separated, from {', '.join(RECIPES)}")
    p.add_argument("-T", "--timesteps", default="8,32", help="T values to report")
    p.add_argument("--limit", type=int, default=None, help="only the first N test samples")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless every expected consumer runs the MLP and CNN files")
    p.add_argument("--write-doc", action="store_true", help="write the table into docs/nir.md")
    p.add_argument("--json", dest="json_path", type=Path, help="also write all rows as JSON")
    a = p.parse_args(argv)
    report = sorted({int(t) for t in a.timesteps.split(",")})
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="onnx2snn-nir-consumers-") as tmp:
        for model in a.models.split(","):
            for recipe in a.recipes.split(","):
                work = Path(tmp) / model / recipe
                work.mkdir(parents=True)
                rows += measure_model(model.strip(), recipe.strip(), report, a.limit, work)
    text = table(rows, report)
    print(text)
    if a.json_path:
        a.json_path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    if a.write_doc:
        write_doc(text)
    if a.check:
        bad = failures(rows, report)
        for line in bad:
            print(f"FAILED {line}", file=sys.stderr)
        print(f"nir consumer check: {'FAILED' if bad else 'ok'}", file=sys.stderr)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
