"""Regenerate docs/supported_ops.md from the converter registry.

    python tools/gen_supported_ops.py           # write docs/supported_ops.md
    python tools/gen_supported_ops.py --check   # exit 1 if the committed file is stale

Run it inside the project's virtualenv (``./dev shell python tools/gen_supported_ops.py``). The
rendering lives in ``onnx2snn.frontend.supported_ops`` so that a test can compare the committed
file with what the registry says now.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onnx2snn.frontend.supported_ops import render_supported_ops

DOC = Path(__file__).resolve().parents[1] / "docs" / "supported_ops.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare; exit 1 if docs/supported_ops.md is stale")
    args = parser.parse_args()
    text = render_supported_ops()
    if args.check:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is stale: run python tools/gen_supported_ops.py", file=sys.stderr)
            return 1
        print(f"{DOC} is up to date")
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
