"""The `cli` Typer app: the global options, the command groups, and the one place where a domain error
becomes a red line and an exit code (never a traceback for a user's mistake)."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer
from typer.core import TyperGroup

from mlops.cli import data, deploy, experiments, labelling, lifecycle, quickstart, tune
from mlops.cli.console import State, err


class _Commands(TyperGroup):
    """Runs a command; a ``MlopsError`` becomes its message and exit code, Ctrl-C exit 130."""

    def invoke(self, ctx):
        from mlops.core.errors import MlopsError

        try:
            return super().invoke(ctx)
        except MlopsError as exc:
            if State.verbose:
                err.print_exception()
            err.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]Interrupted.[/] Nothing half-written was kept; completed folds and generated batches "
                      "resume when the same command is rerun.")
            raise typer.Exit(130) from None


app = typer.Typer(
    name="cli",
    cls=_Commands,
    help="Fine-tune text classifiers and measure, honestly, how good they are.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for group in (lifecycle, quickstart, experiments, deploy, data, labelling, tune):
    app.add_typer(group.commands)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs and tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="When another command is writing the same experiment, wait for it to finish instead of "
                       "failing (cli --wait run-backtesting ...).")] = False,
) -> None:
    """Configure logging once for every command."""
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = RichHandler(console=err, show_path=False, show_time=False, rich_tracebacks=verbose)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from mlops.core.runtime import configure_openmp

    configure_openmp()  # before any command imports torch: OpenMP reads it once, when it loads
    State.verbose = verbose
    State.wait = wait
    State.quiet = quiet
