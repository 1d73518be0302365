"""Helpers of the compare/report tests: the tiny real task, and running the CLI in or out of this process.

Imported by basename (pytest puts this folder on sys.path), so the tests run with `pytest` or `python -m pytest`.
"""

import os
import sys
from pathlib import Path

#: Tiny real task: 200 VADER tweets (stratified) on the bundled MiniLM encoder.
DATA = ["--data", "bundled:sentiment-tweets", "--sample", "200", "--tsne-points", "200"]


def cli_env(cache: Path) -> dict:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "TRANSFERKIT_CACHE": str(cache),
            "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def main_in_process(*args) -> tuple[int, str, str]:
    """`transferkit ARGS` through the real entry point, in this process (no interpreter start-up to pay);
    (exit code, stdout, stderr). Strategies still run in their own child processes."""
    import contextlib
    import io

    from transferkit.cli import main

    old = sys.argv
    sys.argv = ["transferkit", *args]
    code = 0
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


def DATA_ITEMS(doc: dict) -> list:  # noqa: N802 — a constant-like helper beside DATA
    """The test items of the comparison `doc`, in the order its strategies predicted them."""
    from transferkit.report.inputs import CompareSettings, load_inputs

    inputs = load_inputs(CompareSettings.from_dict(doc["settings"]))
    return [inputs.source.items[i] for i in inputs.split.test]
