"""Regenerate docs/supported_ops.md from the converter registry.

    python tools/gen_supported_ops.py           # write docs/supported_ops.md
    python tools/gen_supported_ops.py --check   # exit 1 if the committed file is stale

Run it inside the project's virtualenv (``./dev shell python tools/gen_supported_ops.py``). The
rendering lives in ``onnx2snn.frontend.supported_ops`` so that a test can compare the committed
file with what the registry says now.
"""

from __future__ import annotations

import sys

from docgen import DOCS, write_or_check

from onnx2snn.frontend.supported_ops import render_supported_ops

if __name__ == "__main__":
    sys.exit(write_or_check(DOCS / "supported_ops.md", render_supported_ops, __doc__.splitlines()[0]))
