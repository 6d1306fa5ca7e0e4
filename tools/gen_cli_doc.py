"""Regenerate docs/cli.md from the click commands and onnx2snn/errors.py.

    python tools/gen_cli_doc.py           # write docs/cli.md
    python tools/gen_cli_doc.py --check   # exit 1 if the committed file is stale

Run it inside the project's virtualenv (``./dev shell python tools/gen_cli_doc.py``) after adding
or changing a command or an option. The rendering lives in ``onnx2snn.cli.reference``.
"""

from __future__ import annotations

import sys

from docgen import DOCS, write_or_check

from onnx2snn.cli.reference import render_cli_reference

if __name__ == "__main__":
    sys.exit(write_or_check(DOCS / "cli.md", render_cli_reference, __doc__.splitlines()[0]))
