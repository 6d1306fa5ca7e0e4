"""What every ``onnx2snn`` command shares: error-to-exit-code mapping, messages, reusable options.

``Onnx2SnnGroup`` is the one place that turns exceptions into exit codes (the table is in
``onnx2snn.errors``): an ``Onnx2SnnError`` prints one ``onnx2snn: error: ...`` message on stderr and
exits with the error's code; anything else is a bug and exits 1 with "internal error" and a hint
to rerun with ``-v``, which shows the traceback in both cases. Running out of memory
(``MemoryError``) is not a bug: one line saying so, exit code 4. Library warnings are printed as
one ``onnx2snn: warning: ...`` line each.

Commands live in their own modules and use the option decorators below (``model_argument``,
``json_option``, ``drop_option``, ``verbose_option``) so the same option reads the same everywhere.
"""

from __future__ import annotations

import errno
import traceback
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import click

from onnx2snn.errors import Onnx2SnnError

F = TypeVar("F", bound=Callable[..., Any])

PROG = "onnx2snn"
OUT_OF_MEMORY_EXIT_CODE = 4  # like a model a target cannot express (errors.py's table)
VERBOSE_KEY = "onnx2snn.verbose"


def error(message: str) -> None:
    """Print ``onnx2snn: error: message`` on stderr."""
    click.echo(f"{PROG}: error: {message}", err=True)


def warn(message: str) -> None:
    """Print ``onnx2snn: warning: message`` on stderr."""
    click.echo(f"{PROG}: warning: {message}", err=True)


def is_verbose(ctx: click.Context | None = None) -> bool:
    """True if ``-v/--verbose`` was given (before or after the command name)."""
    ctx = ctx or click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(VERBOSE_KEY, False))


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[VERBOSE_KEY] = True
    return value


def verbose_option(f: F) -> F:
    """``-v/--verbose``: show tracebacks of errors (also accepted before the command name)."""
    return click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_verbose,
                        help="Show the full traceback when something fails.")(f)


def model_argument(f: F) -> F:
    """The ONNX model path argument (existence is checked by the library, for one message)."""
    return click.argument("model", metavar="MODEL.onnx", type=click.Path(dir_okay=True))(f)


def json_option(f: F) -> F:
    """``--json``: print one JSON object on stdout instead of text."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the result as one JSON object on stdout.")(f)


def output_option(f: F) -> F:
    """``--output NAME``: the model output (or any value) the spiking network computes."""
    return click.option(
        "--output", "output", default=None, metavar="NAME",
        help="Convert to this output of the model (or any value it computes, e.g. the input of "
             "a ZipMap). By default a classifier's post-processing outputs (label branch, "
             "ZipMap) are pruned when one output holds the scores; the choice is reported.")(f)


def nir_for_option(f: F) -> F:
    """``--nir-for``: the NIR consumer a ``.nir`` file is written for (docs/nir.md)."""
    from onnx2snn.backends.nir.export import NIR_FORMS

    return click.option(
        "--nir-for", type=click.Choice(NIR_FORMS), default="generic", show_default=True,
        help="--target nir: the consumer the file is written for. generic: IF for nir 1.0.8 "
             "(reset to 0), read as written by Norse, spyx and Sinabs; sinabs: the same nodes "
             "declared for nir 1.0.4, whose IF resets by subtraction (the converted network's "
             "own reset); snntorch: non-leaking LIF in snnTorch's dt = 1e-4 (snnTorch 1.0 maps "
             "IF to a leaky neuron it cannot run); norse, spyx: as generic, but check refuses "
             "what that consumer would run wrongly. See docs/nir.md.")(f)


def parallel_options(runs: str) -> Callable[[F], F]:
    """``--workers N``, ``--parallel processes|ray``, ``--ray-address``: where the shards of a
    simulation run (``onnx2snn.parallel``); ``runs`` says what is sharded, for the help text."""
    from onnx2snn.parallel import ENGINES

    def decorate(f: F) -> F:
        f = click.option(
            "--ray-address", default=None, metavar="ADDRESS",
            help="Run the shards on this Ray cluster (e.g. ray://head:10001 or auto); implies "
                 "--parallel ray.")(f)
        f = click.option(
            "--parallel", type=click.Choice(ENGINES), default="processes", show_default=True,
            help="Where the shards run: processes on this machine, or ray (a local Ray cluster "
                 "of --workers CPUs, or the one at --ray-address; pip install 'onnx2snn[ray]')."
        )(f)
        return click.option(
            "--workers", type=click.IntRange(1), default=1, show_default=True,
            help=f"Simulate the data set in shards of --batch-size samples on N processes "
                 f"({runs}); the numbers equal those of one process bit for bit.")(f)

    return decorate


def drop_option(f: F) -> F:
    """``--drop OP`` (repeatable): remove every node of an ONNX op type as if it were Identity."""
    return click.option(
        "--drop", "drop_ops", multiple=True, metavar="OP",
        help="Remove every node of ONNX op type OP as if it were the identity (e.g. --drop LRN). "
             "An approximation: the network's outputs change. Repeatable.")(f)


def warn_dropped(drop_ops: tuple[str, ...]) -> None:
    """The loud warning ``--drop`` deserves."""
    if drop_ops:
        warn(f"--drop {' '.join(sorted(set(drop_ops)))}: every node of these op types is removed "
             "as if it were the identity; the network no longer computes what the ONNX model "
             "computes, so check its accuracy")


class Onnx2SnnGroup(click.Group):
    """The command group that maps errors to exit codes and prints warnings; see module doc."""

    def invoke(self, ctx: click.Context) -> Any:
        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
            warn(str(message))

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.showwarning = show
                return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Onnx2SnnError as e:
            if is_verbose(ctx):
                traceback.print_exc()
            error(str(e))
            ctx.exit(e.exit_code)
        except MemoryError as e:  # a resource limit, not a bug: say so, with what to try
            if is_verbose(ctx):
                traceback.print_exc()
            error(f"out of memory{': ' + str(e) if str(e) else ''}; the model's activations or "
                  "the data need more memory than this machine gives (try a smaller --batch-size "
                  "or --calib-samples, or a smaller input size)")
            ctx.exit(OUT_OF_MEMORY_EXIT_CODE)
        except OSError as e:
            if e.errno == errno.EPIPE:  # `onnx2snn inspect m.onnx | head`: click handles it
                raise
            _internal(ctx, e)
        except Exception as e:
            _internal(ctx, e)


def _internal(ctx: click.Context, e: BaseException) -> None:
    if is_verbose(ctx):
        traceback.print_exc()
        error(f"internal error: {type(e).__name__}: {e} (this is a bug in onnx2snn; please "
              "report it with the traceback above)")
    else:
        error(f"internal error: {type(e).__name__}: {e} (this is a bug in onnx2snn; rerun with "
              "-v for the traceback and please report it)")
    ctx.exit(1)
