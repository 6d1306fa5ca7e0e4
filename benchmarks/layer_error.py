"""Where a converted network loses accuracy: each layer's SNN output against its rate limit.

    onnx2snn convert models/mnist_inception.onnx --calib models/mnist_calib.npz -o out
    ./dev shell python benchmarks/layer_error.py out --data models/mnist_test.npz -T 32 --limit 300

For every population, max-pool gate, Concat and pool of the converted graph, with s[t] the node's
output at step t in the reference simulator (ideal schedule, direct input; a population sends λ
per spike, so the mean output is rate · λ) and a its rate limit — the ANN with every ReLU clipped
at its λ, i.e. what the SNN converges to as T grows (``run_ann`` on the SNN graph), in ANN units:

    rel. error = mean |(1/T) Σ_t s[t] − a| / mean |a|        (over samples and elements)
    SNN/ANN    = mean((1/T) Σ_t s[t]) / mean(a)               (> 1: the layer sends too much)

The error of a layer includes what it inherits from the layers before it: a jump from one layer
to the next locates a layer that loses accuracy. Also prints the accuracy of the rate limit and
of the SNN at T on the same samples.
"""

from __future__ import annotations

import argparse

import numpy as np

from onnx2snn.ann_executor import run_ann
from onnx2snn.artifacts import read_output_folder
from onnx2snn.backends.numpy import simulate
from onnx2snn.data import load_dataset

KINDS = ("if", "maxpool_gate", "concat", "add", "avgpool")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("converted", help="output folder of onnx2snn convert")
    ap.add_argument("--data", required=True, help="test data file (.npz with x and y)")
    ap.add_argument("-T", "--timesteps", type=int, default=32, help="time steps simulated")
    ap.add_argument("--limit", type=int, default=300, help="use the first N samples")
    args = ap.parse_args()

    graph = read_output_folder(args.converted).graph
    data = load_dataset(args.data, limit=args.limit)
    nodes = [n.name for n in graph.nodes if n.kind in KINDS]
    limit = run_ann(graph, data.x.astype(np.float64), keep=nodes)
    run = simulate(graph, data.x, args.timesteps, record=nodes)

    print(f"{args.converted}: {len(data)} samples of {args.data}, T = {args.timesteps}")
    print("| node | kind | rel. error | SNN/ANN | mean rate limit |")
    print("| --- | --- | ---: | ---: | ---: |")
    kind = {n.name: n.kind for n in graph.nodes}
    for name in nodes:
        a = limit[name]
        s = run.recorded[name].astype(np.float64).mean(axis=0)
        rel = np.abs(s - a).mean() / np.abs(a).mean()
        print(f"| {name} | {kind[name]} | {rel:.4f} | {s.mean() / a.mean():.4f} | {a.mean():.4f} |")
    if data.y is not None:
        out = graph.outputs[0]
        ann = (limit[out].argmax(-1) == data.y).mean()
        snn = (run.predictions[out][-1].argmax(-1) == data.y).mean()
        print(f"accuracy: rate limit {100 * ann:.2f} %, SNN at T = {args.timesteps} "
              f"{100 * snn:.2f} %")


if __name__ == "__main__":
    main()
