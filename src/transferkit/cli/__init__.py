"""The `transferkit` command. Thin: it parses, calls the library, prints. Errors are one line, exit code 2.

    from transferkit.cli import app, main
"""

from transferkit.cli import commands  # noqa: F401 — registers every command
from transferkit.cli.app import app, main

__all__ = ["app", "main"]
