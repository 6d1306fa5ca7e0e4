#!/usr/bin/env bash
# Build .venv-sj at the repository root (Python 3.11, torch 2.13.0 CPU, SpikingJelly) for
# benchmarks/bench_spikingjelly.py. Rebuilt when spikingjelly-requirements.txt changes; a no-op
# otherwise. Usage: bash benchmarks/setup_spikingjelly.sh  (prints the venv's python on stdout)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(dirname "$here")/.venv-sj" req="$here/spikingjelly-requirements.txt"
stamp="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    py="${ONNX2SNN_SJ_PYTHON:-}"
    if [[ -z "$py" ]]; then
        for c in python3.11 "$(pyenv root 2>/dev/null)/versions/"3.11.*/bin/python \
                 /usr/bin/python3.11; do
            if [[ -x "$(command -v "$c" 2>/dev/null)" ]] && "$c" --version >/dev/null 2>&1; then
                py="$c"; break
            fi
        done
    fi
    [[ -n "$py" ]] || { echo "setup_spikingjelly: no Python 3.11 found; set ONNX2SNN_SJ_PYTHON" >&2; exit 2; }
    echo "setup_spikingjelly: building $venv with $py" >&2
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2
    echo "$stamp" >"$venv/.stamp"
fi
echo "$venv/bin/python"
