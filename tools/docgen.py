"""The shared main of the doc generators: write a generated Markdown file, or check it is current."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def write_or_check(doc: Path, render: Callable[[], str], description: str) -> int:
    """Write ``render()`` to ``doc``; with ``--check`` only compare and return 1 when stale."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true",
                        help=f"only compare; exit 1 if {doc.name} is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = doc.read_text(encoding="utf-8") if doc.exists() else ""
        if current != text:
            print(f"{doc} is stale: run python {sys.argv[0]}", file=sys.stderr)
            return 1
        print(f"{doc} is up to date")
        return 0
    doc.write_text(text, encoding="utf-8")
    print(f"wrote {doc}")
    return 0
