"""``onnx2snn emit OUT/ --target T -o OUT2/``: re-emit a converted network without recalibrating."""

from __future__ import annotations

import click

from onnx2snn.artifacts import read_output_folder, write_output_folder
from onnx2snn.backends import REGISTRY, cannot_express, get_backend
from onnx2snn.backends.nir.export import NIR_POOL_MODES, NIR_RESET_MODES
from onnx2snn.cli.common import nir_for_option, verbose_option
from onnx2snn.cli.interrupt import exits_on_interrupt


@click.command()
@click.argument("converted", metavar="OUT/", type=click.Path())
@click.option("--target", "-t", type=click.Choice(list(REGISTRY)), required=True,
              help="Backend whose artifact to write.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (created; an earlier onnx2snn output there is replaced).")
@click.option("--nir-reset", type=click.Choice(NIR_RESET_MODES), default="zero",
              show_default=True,
              help="--target nir: zero (NIR IF, reset to 0; read by every consumer) or exact "
                   "(reset by subtraction as I -> Threshold -> Scale; see docs/nir.md).")
@click.option("--nir-pool", type=click.Choice(NIR_POOL_MODES), default="sum", show_default=True,
              help="--target nir: average pooling as SumPool2d (1/k² folded into the next "
                   "weights) or AvgPool2d.")
@nir_for_option
@verbose_option
@exits_on_interrupt
def emit_cmd(converted: str, target: str, out_dir: str, nir_reset: str, nir_pool: str,
             nir_for: str) -> None:
    """Write a converted network (an OUT/ folder or a .snn file) for another target.

    The SNN graph keeps its scales, recipe and calibration statistics, so nothing is recalibrated.

    Example: onnx2snn emit out/digits_cnn --target nir -o out/digits_cnn_nir
    """
    folder = read_output_folder(converted)
    backend = get_backend(target)
    options = ({"nir_reset": nir_reset, "nir_pool": nir_pool, "nir_for": nir_for}
               if target == "nir" else {})
    problems = backend.check(folder.graph, **options)
    if problems:
        raise cannot_express(target, problems)
    source = folder.source if folder.source is not None and folder.source.is_file() else None
    manifest = {k: v for k, v in folder.manifest.items()
                if k not in ("files", "graph", "source", "format", "version")}
    manifest.update({"target": target, "emitted_from": str(folder.path)})
    written = write_output_folder(out_dir, folder.graph, None if source is None else str(source),
                                  manifest, extra=lambda d: backend.emit(folder.graph, d, **options))
    click.echo(f"wrote {len(written)} files to {out_dir}/: " + ", ".join(p.name for p in written))
