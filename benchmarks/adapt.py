"""Benchmark: feature-level domain adaptation on the bundled digits and sentiment benchmarks.

For each source → target task: target accuracy (on a held-out half of the target) and wall time of every
method at its default settings, next to source-only logistic regression and an oracle trained on the other
target half's labels; then what `--method auto` would pick with each validator of the panel (no target labels;
the source-reading ones also as computed before each classifier kept its source map) and how often that is the
candidate target labels would have picked (pick rate), with the accuracy it gives up (regret) and the mean target
accuracy of the picks, next to always picking source-only or DANN; over all 14 tasks in
benchmarks/results/adapt_validators.json.

Run: ``python benchmarks/adapt.py [digits] [sentiment[=SRC:TGT,SRC:TGT...]] [--label-shift-variants]``, e.g.
``sentiment=movies:tweets,amazon:nyt`` for a subset of the twelve pairs (the table says which ran); writes
benchmarks/results/adapt.txt (+ adapt.json). --label-shift-variants adds candidates with label_shift=bbse to the
grid and reports, over all tasks, what each validator's pick gives on three grids: the one before bbse and kliep
existed, today's GRID, and GRID + the variants (the evidence for what `auto` should search).
Features are cached in the feature store, so a second run does no model work.
"""

from __future__ import annotations

import json
import platform
import sys
import time
import warnings
from pathlib import Path

try:
    import transferkit.adapt  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np

from transferkit.adapt.benchmark import run_benchmark, summarise_picks, table_rows
from transferkit.adapt.fit import GRID
from transferkit.adapt.validate import VALIDATORS, best_index

RESULTS = Path(__file__).resolve().parent / "results"


def fmt_table(rows: list[dict]) -> str:
    lines = [f"{'task':<16} {'method':<44} {'target_acc':>10} {'vs_source_only':>14} {'wall_s':>8}"]
    for r in rows:
        wall = "" if r["wall_s"] is None else f"{r['wall_s']:.1f}"
        lines.append(f"{r['task']:<16} {r['method']:<44} {r['target_acc']:>10.4f} {r['vs_source_only']:>+14.4f} "
                     f"{wall:>8}")
    return "\n".join(lines)


def fmt_validators(summary: dict) -> str:
    lines = [f"{'validator':<22} {'pick_rate':>9} {'mean_regret':>11} {'mean_target_acc':>15}"]
    for v, r in summary.items():
        lines.append(f"{v:<22} {r['pick_rate']:>9.3f} {r['mean_regret']:>11.4f} {r['mean_target_accuracy']:>15.4f}")
    return "\n".join(lines)


#: label-shift variants of the methods that won most often on the 14 pairs
VARIANTS = [("coral", {"label_shift": "bbse"}), ("source-only-mlp", {"label_shift": "bbse"}),
            ("dann", {"label_shift": "bbse"}), ("dann", {"norm": "source", "label_shift": "bbse"})]


def _shifted(r: dict) -> bool:
    return r["hyperparameters"].get("label_shift", "none") != "none"


SUBGRIDS = {"grid before bbse/kliep": lambda r: r["method"] not in ("bbse", "kliep") and not _shifted(r),
            "GRID (with bbse, kliep)": lambda r: not _shifted(r),
            "GRID + label_shift variants": lambda r: True}


def subgrid_summary(tasks: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per sub-grid and validator: the mean target accuracy of its pick among that sub-grid's candidates, the
    regret against the sub-grid's best, and the best (oracle) mean target accuracy of the sub-grid."""
    out = {}
    for g, keep in SUBGRIDS.items():
        rows = [[r for r in t["candidates"] if keep(r)] for t in tasks]
        best = [max(r["target_accuracy"] for r in rs) for rs in rows]
        out[g] = {"oracle": {"mean_target_accuracy": float(np.mean(best))}}
        for v in VALIDATORS:
            picked = [rs[best_index([r[v] for r in rs], v)]["target_accuracy"] for rs in rows]
            out[g][v] = {"mean_target_accuracy": float(np.mean(picked)),
                         "mean_regret": float(np.mean(np.subtract(best, picked)))}
    return out


def fmt_subgrids(summary: dict) -> str:
    names = list(VALIDATORS)
    lines = [f"{'grid':<30} {'oracle':>7} " + " ".join(f"{v:>10}" for v in names)]
    for g, r in summary.items():
        lines.append(f"{g:<30} {r['oracle']['mean_target_accuracy']:>7.4f} "
                     + " ".join(f"{r[v]['mean_target_accuracy']:>10.4f}" for v in names))
    return "\n".join(lines)


def main(names: list[str], variants: bool = False) -> None:
    warnings.filterwarnings("ignore")
    RESULTS.mkdir(exist_ok=True)
    text = [f"# benchmarks/adapt.py on {platform.machine()} {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}", ""]
    results = {}
    for arg in names:
        name, _, spec = arg.partition("=")
        pairs = [tuple(p.split(":")) for p in spec.split(",")] if spec else None
        t0 = time.perf_counter()
        res = run_benchmark(name, pairs=pairs, log=lambda m: print(m, file=sys.stderr, flush=True),
                            grid=GRID + VARIANTS if variants else None)
        results[name] = res
        text += [f"## {name} ({len(res['tasks'])} tasks: {', '.join(res['tasks'])}; {time.perf_counter() - t0:.0f} s "
                 "in all, candidates' DEV/SND scoring included)", fmt_table(table_rows(res)), "",
                 f"validator pick rate (chose the candidate target labels would choose, {len(res['tasks'])} tasks): "
                 f"DEV {res['dev_pick_rate']:.2f}, SND {res['snd_pick_rate']:.2f}; mean regret (target accuracy "
                 f"lost vs the best candidate): DEV {res['dev_mean_regret']:.4f}, SND {res['snd_mean_regret']:.4f}",
                 "", f"every validator on {name} (@before: source items through the target's map, as before "
                 "each classifier kept its source map; 'always X': no choosing):", fmt_validators(res["validators"]),
                 ""]
        tasks = [t for r in results.values() for t in r["tasks"].values()]
        if len(results) > 1:
            combined = summarise_picks(tasks)
            text += [f"## all {len(tasks)} tasks together", fmt_validators(combined), ""]
            if variants:
                sub = subgrid_summary(tasks)
                text += [f"## mean target accuracy of each validator's pick on three grids ({len(tasks)} tasks)",
                         fmt_subgrids(sub), ""]
            (RESULTS / "adapt_validators.json").write_text(json.dumps(
                {"tasks": len(tasks), "benchmarks": list(results), "validators": combined,
                 **({"subgrids": subgrid_summary(tasks)} if variants else {}),
                 "grid": [[m, hp] for m, hp in (GRID + VARIANTS if variants else GRID)],
                 "per_benchmark": {k: r["validators"] for k, r in results.items()},
                 "agreement": {f"{k}:{t}": v["agreement"] for k, r in results.items()
                               for t, v in r["tasks"].items()}}, indent=1, default=str) + "\n")
        (RESULTS / "adapt.txt").write_text("\n".join(text) + "\n")
        (RESULTS / "adapt.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        print("\n".join(text), flush=True)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--label-shift-variants"]
    main(args or ["digits", "sentiment"], variants="--label-shift-variants" in sys.argv[1:])
