"""Regenerate docs/cli.md from the click commands and onnx2snn/errors.py.

    python tools/gen_cli_doc.py           # write docs/cli.md
    python tools/gen_cli_doc.py --check   # exit 1 if the committed file is stale

Run it inside the project's virtualenv (``./dev shell python tools/gen_cli_doc.py``) after adding
or changing a command or an option. The rendering lives in ``onnx2snn.cli.reference``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onnx2snn.cli.reference import render_cli_reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare; exit 1 if docs/cli.md is stale")
    args = parser.parse_args()
    text = render_cli_reference()
    if args.check:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is stale: run python tools/gen_cli_doc.py", file=sys.stderr)
            return 1
        print(f"{DOC} is up to date")
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
