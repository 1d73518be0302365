"""OUT/best/: the recommended strategy's model folder, copied where the user looks, so a comparison ends in a
model that `transferkit predict`, `export` and `serve` take, not only in a number."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from transferkit.io import write_json
from transferkit.report.runner import RESULTS
from transferkit.report.summary import DEFAULT_TOLERANCE, recommend

BEST = "best"
#: what a model folder copy leaves out: training state, logs, temp files
SKIP = ("state", "*.tmp", "log.txt", "task.json", "result.json", "predictions.json")


def publish_best(doc: dict, out: str | Path, tolerance: float = DEFAULT_TOLERANCE) -> dict | None:
    """Copy the recommended strategy's model folder to `out/best` (replacing an older one) and record it in
    results.json as doc["best"]; None when nothing finished or the recommended run left no model folder."""
    from transferkit.model import is_model_folder, read_info

    out = Path(out)
    rec = recommend(doc, tolerance)
    if rec is None:
        return None
    record = next(r for r in doc["strategies"] if r["name"] == rec["name"])
    src = (record.get("artefacts") or {}).get("model")
    if not src or not is_model_folder(src):
        doc["best"] = {"name": rec["name"], "path": None,
                       "note": "the recommended run left no model folder (made by an earlier version): rerun it"}
        write_json(out / RESULTS, doc)
        return doc["best"]
    dest = out / BEST
    tmp = Path(tempfile.mkdtemp(prefix=".best-", dir=out))
    shutil.rmtree(tmp)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*SKIP))
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    doc["best"] = {"name": rec["name"], "path": str(dest), "kind": read_info(dest).kind, "from": str(src)}
    write_json(out / RESULTS, doc)
    return doc["best"]
