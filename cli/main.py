"""The ``onnx2snn`` command line: parses options, calls the library, reports."""

import click

from onnx2snn import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnx2snn")
def main() -> None:
    """Convert ONNX neural networks to spiking neural networks."""
