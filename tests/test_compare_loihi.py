"""``compare --targets loihi``: the fixed-point simulator on every sample, Lava on --lava-limit.

On the bundled MLP with a few images and T = 16 (CI time): Lava ``fixed_pt`` must equal the
fixed-point reference simulator message for message; a Lava network given a graph with one weight
changed must make compare exit 5 (the check exists and bites); ``--lava-limit 0`` skips Lava.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnx2snn.cli.main import main
from onnx2snn.ir.loihi import LoihiDense

ROOT = Path(__file__).resolve().parents[1]
N, LAVA_N = 30, 3


def run_compare(*extra: str) -> object:
    args = ["compare", str(ROOT / "models/digits_mlp.onnx"), "--targets", "numpy,loihi",
            "--calib", str(ROOT / "models/digits_calib.npz"),
            "--data", str(ROOT / "models/digits_test.npz"), "-T", "16", "--limit", str(N),
            *extra]
    return CliRunner().invoke(main, args)


@pytest.mark.slow
def test_lava_equals_fixed_point_on_the_capped_samples() -> None:
    pytest.importorskip("lava")
    r = run_compare("--lava-limit", str(LAVA_N), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    rows = {t["target"]: t for t in d["targets"]}
    assert d["failures"] == []
    assert rows["numpy"]["samples"] == rows["loihi"]["samples"] == N
    lava = rows["lava"]
    assert lava["status"] == "ok" and lava["samples"] == LAVA_N
    assert lava["spike_mismatches"] == 0 and lava["spikes_compared"] > 0
    assert f"Lava ran on {LAVA_N} of {N} samples" in lava["note"]


@pytest.mark.slow
def test_compare_exits_5_when_lava_and_fixed_point_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lava")
    from onnx2snn.backends.loihi import network

    x = np.load(ROOT / "models/digits_test.npz")["x"][:LAVA_N].reshape(LAVA_N, -1)
    pixel = int(np.abs(x).sum(axis=0).argmax())  # an input every capped image drives

    class OneWeightOff(network.LavaNetwork):
        """Lava given the quantized graph with one weight of the first dense layer changed."""

        def __init__(self, graph, *args, **kwargs):  # type: ignore[no-untyped-def]
            nodes = list(graph.nodes)
            i = next(i for i, n in enumerate(nodes) if isinstance(n, LoihiDense))
            w = nodes[i].weight_mant.copy()
            w[0, pixel] = w[0, pixel] - 64 if w[0, pixel] > 0 else w[0, pixel] + 64
            nodes[i] = dataclasses.replace(nodes[i], weight_mant=w)
            super().__init__(graph.with_nodes(nodes), *args, **kwargs)

    monkeypatch.setattr(network, "LavaNetwork", OneWeightOff)
    r = run_compare("--lava-limit", str(LAVA_N))
    assert r.exit_code == 5, r.output
    assert "must agree" in r.stderr and "lava: Lava ran on 3 of 30 samples" in r.stderr
    assert "differ from the fixed-point simulator" in r.stderr


def test_lava_limit_0_skips_lava_and_says_so() -> None:
    r = run_compare("--lava-limit", "0")
    assert r.exit_code == 0, r.output
    assert "Lava ran on 0 of 30 samples" in r.stdout
    line = next(s for s in r.stdout.splitlines() if s.startswith("lava "))
    assert "skipped" in line
