"""Load one ``.nir`` file with one released NIR consumer and run it on test images.

Runs *inside a consumer's virtualenv* (``.venv-nir``: snnTorch, Norse, Spyx, Rockpool with nir
1.0.8; ``.venv-nir-old``: Sinabs with nir 1.0.4), so it imports nothing from onnx2snn: only
numpy, ``nir`` and the consumer. ``tools/nir_consumers.py`` (in the project's venv) writes the
files and calls this script once per consumer.

Each consumer is used the way its own documentation shows a user: ``nir.read`` and the
consumer's ``from_nir`` (or ``import_from_nir``), then the returned network is stepped T times
with the same image each step (direct input, what NIR's ``Input`` means). The prediction at step
t is the argmax of the sum of the network's output over steps 1..t (our files' readout
convention, stated in their metadata). It prints one JSON object: for the consumer, the package
versions, ``load`` / ``run`` (``"ok"`` or the error, first line), and the accuracy (%) at each
requested T.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import traceback
import warnings
from collections.abc import Callable
from importlib import import_module, metadata
from typing import Any

import numpy as np

CONSUMERS = ("snntorch", "norse", "spyx", "rockpool", "sinabs")
PACKAGES = {"snntorch": "snntorch", "norse": "norse", "spyx": "spyx", "rockpool": "rockpool",
            "sinabs": "sinabs"}

# A step function maps the (B, ...) input of one step to the (B, ...) output of that step.
Step = Callable[[np.ndarray], np.ndarray]


def _torch_stepper(module: Any, reset: Callable[[], None] | None = None) -> Callable[[], Step]:
    """Steps a nirtorch-built module that returns ``(output, state)`` (nirtorch 2.x)."""
    import torch

    def start() -> Step:
        state: list[Any] = [None]
        if reset is not None:
            reset()

        def step(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                res = module(torch.as_tensor(x)) if state[0] is None else \
                    module(torch.as_tensor(x), state[0])
            if isinstance(res, tuple) and len(res) == 2:
                out, state[0] = res
            else:
                out = res
            return np.asarray(out.detach().numpy(), np.float64)
        return step
    return start


def load_snntorch(graph: Any) -> Callable[[], Step]:
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    net = import_from_nir(graph)
    return _torch_stepper(net, lambda: snntorch.utils.reset(net))


def load_norse(graph: Any) -> Callable[[], Step]:
    import norse.torch

    return _torch_stepper(norse.torch.from_nir(graph))


def load_rockpool(graph: Any) -> Callable[[], Step]:
    from rockpool.nn.modules.torch.nir import from_nir

    return _torch_stepper(from_nir(graph))


def run_sinabs(graph: Any, x: np.ndarray, timesteps: int) -> np.ndarray:
    """(T, B, ...) outputs of ``sinabs.from_nir``: its layers take (B·T, ...) stacks, sample by
    sample (Sinabs's ``batch_size`` argument splits them back into (B, T))."""
    import sinabs
    import torch

    net = sinabs.from_nir(graph, batch_size=len(x))
    xs = np.repeat(x[:, None], timesteps, axis=1).reshape((-1,) + x.shape[1:])
    with torch.no_grad():
        out = net(torch.as_tensor(xs))
    if isinstance(out, tuple):
        out = out[0]
    out = np.asarray(out.detach().numpy(), np.float64)
    return out.reshape((len(x), timesteps) + out.shape[1:]).swapaxes(0, 1)


def run_spyx(graph: Any, x: np.ndarray, timesteps: int) -> np.ndarray:
    """(T, B, ...) outputs of ``spyx.nir.from_nir``, which builds and runs in one call."""
    import jax.numpy as jnp
    import spyx.nir

    xs = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x  # spyx runs channels-last (its docs)
    data = jnp.broadcast_to(jnp.asarray(xs), (timesteps,) + xs.shape)
    _, out = spyx.nir.from_nir(graph, data, dt=1)
    return np.asarray(out, np.float64)


LOADERS = {"snntorch": load_snntorch, "norse": load_norse, "rockpool": load_rockpool}
RUNNERS = {"spyx": run_spyx, "sinabs": run_sinabs}  # these build and run in one call


def _first_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _versions(consumer: str) -> dict[str, str]:
    out = {}
    for pkg in (PACKAGES[consumer], "nir", "nirtorch", "torch", "jax"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def accuracy_at(outputs: np.ndarray, labels: np.ndarray, report: list[int]) -> dict[str, float]:
    """Accuracy (%) of argmax(sum of outputs over steps 1..t) for each t in ``report``."""
    flat = outputs.reshape(outputs.shape[0], outputs.shape[1], -1)
    cum = np.cumsum(flat, axis=0)
    return {str(t): float(100.0 * np.mean(np.argmax(cum[t - 1], axis=1) == labels))
            for t in report}


def check(consumer: str, path: str, data: str, report: list[int], limit: int | None,
          batch: int) -> dict[str, Any]:
    import nir

    result: dict[str, Any] = {"consumer": consumer, "versions": _versions(consumer),
                              "load": "not tried", "run": "not tried", "accuracy": {}}
    d = np.load(data)
    x, y = np.asarray(d["x"], np.float32), np.asarray(d["y"])
    if limit:
        x, y = x[:limit], y[:limit]
    timesteps = max(report)
    try:
        graph = nir.read(path)
        if consumer in RUNNERS:  # built inside the run: a failure to build shows there
            start = None
            import_module(PACKAGES[consumer] + (".nir" if consumer == "spyx" else ""))
        else:
            start = LOADERS[consumer](graph)
        result["load"] = "ok"
    except Exception as e:
        result["load"] = _first_line(e)
        result["trace"] = traceback.format_exc(limit=-3)
        return result
    try:
        chunks = []
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            if start is None:
                chunks.append(RUNNERS[consumer](graph, xb, timesteps))
                continue
            step = start()
            chunks.append(np.stack([step(xb) for _ in range(timesteps)]))
        outputs = np.concatenate(chunks, axis=1)
        if outputs.shape[:2] != (timesteps, len(x)) or outputs[0, 0].size != 10:
            raise ValueError(f"output of shape {outputs.shape}: expected ({timesteps}, "
                             f"{len(x)}, 10)")
        result["run"] = "ok"
        result["accuracy"] = accuracy_at(outputs, y, report)
    except Exception as e:
        result["run"] = _first_line(e)
        result["trace"] = traceback.format_exc(limit=-3)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("consumer", choices=CONSUMERS)
    p.add_argument("nir_file")
    p.add_argument("--data", required=True, help="NPZ with x (N, ...) and y (N,)")
    p.add_argument("-T", "--timesteps", default="8,32",
                   help="comma-separated T values to report; the run lasts the largest")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples")
    p.add_argument("--batch", type=int, default=540, help="samples per run")
    a = p.parse_args(argv)
    warnings.simplefilter("ignore")
    report = sorted({int(t) for t in a.timesteps.split(",")})
    result = check(a.consumer, a.nir_file, a.data, report, a.limit, a.batch)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
