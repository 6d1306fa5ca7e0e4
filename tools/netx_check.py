"""Load a netx file written by ``onnx2snn convert --target loihi`` with lava-dl and run it.

    tools/netx_check.sh OUT/ [--images N] [--timesteps T]     (builds the lava-dl venv first)

Needs lava-dl (``lava.lib.dl.netx``), which imports torch: it runs in its own virtualenv
(``tools/netx_check.sh`` builds ``.venv-netx``), never in the project's. For each of the first N
test images it builds nothing new: ``hdf5.Network(OUT/loihi_netx.h5, **NETX_LOAD_ARGS)`` is
compiled once, fed the same 8-bit input as onnx2snn's own Lava network, and every block's
messages are recorded. Against onnx2snn's fixed-point reference simulator
(``OUT/loihi_network.snn``, bit-exact with onnx2snn's Lava builder) it checks, at every step:

* every population's messages (netx block outputs) are equal;
* the netx output (a Sigma neuron: the running sum of the readout currents) equals the running
  sum of the reference's readout currents, so the predictions are equal.

Exit 0 when all are equal, 1 otherwise; prints one line per population.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder written by `onnx2snn convert --target loihi`")
    ap.add_argument("--data", type=Path, default=ROOT / "models" / "digits_test.npz")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--timesteps", type=int, default=16)
    args = ap.parse_args()

    from lava.lib.dl.netx import hdf5
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    from onnx2snn.backends.loihi.artifacts import NETX_LOAD_ARGS
    from onnx2snn.backends.loihi.network import _from_lava, _to_lava
    from onnx2snn.backends.numpy.fixed_point import simulate_fixed
    from onnx2snn.ir import load_graph
    from onnx2snn.ir.loihi import LoihiInput, LoihiNeuron, LoihiReadout

    q = load_graph(args.out / "loihi_network.snn")
    netx_file = args.out / "loihi_netx.h5"
    if not netx_file.is_file():
        print(f"no netx file in {args.out}: {(args.out / 'loihi_netx_NOT_WRITTEN.txt').read_text()}")
        return 1
    x = np.load(args.data)["x"][: args.images]
    T = args.timesteps
    pops = [n.name for n in q.nodes if isinstance(n, LoihiNeuron)]
    (out_name,) = q.outputs
    readout = q[out_name]
    assert isinstance(readout, LoihiReadout)
    feed = readout.inputs[0]
    ref = simulate_fixed(q, x, T, record=pops + [feed])
    (inp,) = [n for n in q.nodes if isinstance(n, LoihiInput)]

    net = hdf5.Network(net_config=str(netx_file), **NETX_LOAD_ARGS)
    print(net)
    blocks = list(net.layers)
    if len(blocks) != len(pops) + 1:
        print(f"netx built {len(blocks)} blocks for {len(pops)} populations and a readout")
        return 1
    source = Source(data=np.zeros(tuple(net.inp.shape) + (T,), np.int32))
    source.s_out.connect(net.inp)
    sinks = [Sink(shape=b.out.shape, buffer=T) for b in blocks]
    for b, s in zip(blocks, sinks):
        b.out.connect(s.a_in)

    got: dict[str, list[np.ndarray]] = {p: [] for p in pops + [out_name]}
    started = False
    try:
        for xi in x:
            qx = inp.quantize(xi)
            data = np.broadcast_to(qx, (T,) + qx.shape).copy()
            if inp.encoding == "delta":
                data[1:] = 0
            if len(net.inp.shape) == 1:  # netx's first block is a Dense: the input in IR order
                data = data.reshape(T, -1)
            data = np.moveaxis(_to_lava(data, data.ndim - 1), 0, -1).astype(np.int32)
            if started:
                source.data.set(data)
                _reset(blocks)
            else:
                source.data.init = data
            source.run(condition=RunSteps(num_steps=T), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
            started = True
            for name, s in zip(pops + [out_name], sinks):
                d = np.moveaxis(np.asarray(s.data.get()), -1, 0)
                got[name].append(_from_lava(d, len(q[name].shape)))
    finally:
        if started:
            source.stop()

    ok = True
    for p in pops:
        a = np.stack(got[p], axis=1)
        # the reference records what the next synapses receive (one step after the send)
        same = np.array_equal(a[:-1], ref.recorded[p][1:])
        sent = int(np.count_nonzero(a))
        print(f"{p:<24} messages equal: {same}   ({sent} nonzero messages over {len(x)} images)")
        ok &= same
    sigma = np.stack(got[out_name], axis=1)
    want = np.cumsum(ref.recorded[feed], axis=0)
    same = np.array_equal(sigma, want)
    pred_netx = readout.predict(np.diff(sigma, axis=0, prepend=0)).reshape(T, len(x), -1)
    print(f"{out_name:<24} running sum of readout currents equal: {same}; predicted classes at "
          f"T={T}: netx {pred_netx[-1].argmax(-1).tolist()} reference "
          f"{ref.predictions[out_name][-1].reshape(len(x), -1).argmax(-1).tolist()}")
    ok &= same
    print("netx file reproduces onnx2snn's network spike for spike" if ok else "MISMATCH")
    return 0 if ok else 1


def _reset(blocks: list) -> None:
    """Zero every state, as a fresh network starts (netx blocks: synapse + neuron)."""
    for b in blocks:
        syn = b.synapse
        buf = syn.a_buff if hasattr(syn, "a_buff") else syn.a_buf
        buf.set(np.zeros(buf.shape))
        neu = b.neuron
        for var in ("sigma", "act", "residue", "error", "u", "v"):
            if hasattr(neu, var):
                v = getattr(neu, var)
                v.set(np.zeros(v.shape))


if __name__ == "__main__":
    try:
        code = main()
    except Exception:
        import traceback

        traceback.print_exc()
        code = 2
    sys.stdout.flush()
    os._exit(code)  # a Lava runtime that failed to start leaves processes that block a normal exit
