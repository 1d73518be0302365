"""The Typer app, its consoles and printing helpers, and `main` (user errors: one line, exit 2)."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.table import Table

from transferkit.errors import Interrupted, TransferkitError

app = typer.Typer(
    name="transferkit",
    help="Transfer learning with pretrained models: extract features, probe them, fine-tune, adapt, compare routes, "
         "and ship the model (predict, export, serve).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    """A rich table of `rows` (dicts) with `columns` in that order; numbers right-aligned."""
    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c, justify="right" if rows and isinstance(rows[0].get(c), (int, float)) else "left")
    for r in rows:
        table.add_row(*[fmt(r.get(c)) for c in columns])
    console.print(table)


def fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "" if v is None else str(v)


def log(message: str) -> None:
    """A dim progress line on stderr (stdout stays for results)."""
    err_console.print(f"[dim]{message}[/dim]", highlight=False)


def is_main_process() -> bool:
    """False in the non-zero ranks of torchrun / accelerate launch: only rank 0 reports."""
    return int(os.environ.get("RANK", "0")) == 0


def main() -> None:
    """Console entry point: user errors print one line and exit 2, without a traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transferkit.cli import commands  # noqa: F401 — registers every command on `app`

    try:
        app()
    except Interrupted as e:
        err_console.print(f"interrupted: {e}", highlight=False, soft_wrap=True)
        sys.exit(130)
    except TransferkitError as e:
        err_console.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:  # before Typer runs the command (imports)
        _interrupted()
    except SystemExit as e:  # Typer turns Ctrl-C in a command into a silent exit 130
        if e.code == 130 and _from_interrupt(e):
            _interrupted()
        raise


def _interrupted() -> None:
    err_console.print("interrupted: finished work is kept; rerun the same command to resume "
                      "(add --resume for finetune, compare and fit)", highlight=False)
    sys.exit(130)


def _from_interrupt(e: BaseException) -> bool:
    """Whether a KeyboardInterrupt is somewhere in the cause/context chain of `e`."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False
