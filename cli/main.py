"""The ``onnx2snn`` command line: parses options, calls the library, reports.

``main`` is the click group (the console script and ``python -m onnx2snn``). Each command lives in
its own module of this package and is registered in ``COMMANDS`` below; errors become exit codes in
one place, ``cli.common.Onnx2SnnGroup`` (table: ``onnx2snn.errors``, docs/cli.md).
"""

from __future__ import annotations

import click

from onnx2snn import __version__
from onnx2snn.cli.common import Onnx2SnnGroup, verbose_option
from onnx2snn.cli.compare_cmd import compare_cmd
from onnx2snn.cli.convert_cmd import convert_cmd
from onnx2snn.cli.emit_cmd import emit_cmd
from onnx2snn.cli.evaluate_cmd import evaluate_cmd
from onnx2snn.cli.inspect_cmd import inspect


@click.group(cls=Onnx2SnnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="onnx2snn")
@verbose_option
def main() -> None:
    """Convert ONNX neural networks to spiking neural networks.

    Exit codes: 0 success, 1 internal error (a bug), 2 usage error, 3 bad input file,
    4 unsupported model or target, 5 a check failed. -v shows the traceback of an error.
    """


# Register a new command by importing it above and adding it here.
COMMANDS: dict[str, click.Command] = {"inspect": inspect, "convert": convert_cmd,
                                      "evaluate": evaluate_cmd, "emit": emit_cmd,
                                      "compare": compare_cmd}
for _name, _command in COMMANDS.items():
    main.add_command(_command, _name)
