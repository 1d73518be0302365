"""Where a newcomer starts: `demo` (the main job on bundled data) and `models` (what is available here)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from transferkit.cli.app import app, console, log, print_table


@app.command(rich_help_panel="Start")
def demo(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for results.json and the compare "
                                             "report (default: print only; the report goes to the cache).")] = None,
    quick: Annotated[bool, typer.Option(help="Smaller subsets: a short smoke run on 600 items per task.")] = False,
) -> None:
    """Run feature extraction + every head on bundled real data (text and images), next to raw-input baselines;
    then compare probes with fine-tuning on the tweets and write an HTML report."""
    from transferkit.demo import run_demo, run_demo_compare, verdicts
    from transferkit.features import default_cache_dir

    rows = run_demo(quick=quick, progress=sys.stderr.isatty(), log=log)
    print_table("transferkit demo: test-set results (honest: baselines included)", rows,
                ["task", "method", "head", "chosen", "accuracy", "macro_f1", "fit_s", "extract_s"])
    for line in verdicts(rows):
        console.print(line)
    if out is not None:
        from transferkit.io import write_json

        write_json(Path(out) / "results.json", rows)
        console.print(f"results written to {Path(out) / 'results.json'}")
    folder = Path(out) / "compare" if out is not None else default_cache_dir() / f"demo-report{'-quick' * quick}"
    log(f"compare: the routes side by side on the tweets → {folder}")
    doc, page = run_demo_compare(folder, quick=quick, progress=sys.stderr.isatty(), log=log)
    from transferkit.cli.experiments import print_compare

    print_compare(doc, page, 0.01)


@app.command(rich_help_panel="Start")
def models() -> None:
    """List backbone sources, the pretrained backbones usable offline here, and the bundled data sets."""
    from transferkit.backbones import offline_backbones, sources
    from transferkit.datasets import available

    print_table("backbone sources", sources(), ["prefix", "example", "installed", "description"])
    print_table("pretrained backbones available offline", offline_backbones(),
                ["spec", "modality", "dim", "available", "package"])
    rows = [{"name": d.name, "modality": d.modality, "size": d.size, "classes": len(d.classes),
             "available": d.available, "source": d.source} for d in available()]
    print_table("bundled data sets (use as --data bundled:NAME)", rows,
                ["name", "modality", "size", "classes", "available", "source"])
