"""`transferkit rank` end to end on real bundled digits, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run(*args: str, cache: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "TRANSFERKIT_CACHE": cache}
    return subprocess.run([sys.executable, "-m", "transferkit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_rank_prints_each_model_with_its_rank_then_reuses_the_features(tmp_path):
    args = ("rank", "--models", "effnet:lite0,effnet:lite2,st:all-MiniLM-L6-v2", "--data", "bundled:digits",
            "--sample", "300", "--image-size", "64")
    r = run(*args, cache=str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for model in ("effnet:lite0", "effnet:lite2"):
        row = next(line for line in lines if f" {model} " in line)
        assert row.split("│")[1].strip() in {"1", "2"}  # the rank column
    text = next(line for line in lines if "st:all-MiniLM-L6-v2" in line)
    assert "reads text" in text and "logme" in r.stdout and "extract_s" in r.stdout
    assert "best: effnet:lite" in r.stdout and "transferkit probe" in r.stdout
    # the features are in the store now: a JSON run computes no feature again, and probe needs no model
    again = run(*args, "--metric", "all", "--json", cache=str(tmp_path))
    assert again.returncode == 0, again.stderr
    rows = json.loads(again.stdout)
    image_rows = [row for row in rows if row["spec"].startswith("effnet")]
    assert sorted(row["rank"] for row in image_rows) == [1, 2]
    assert all(row["cached"] and row["n_items"] == 300 and row["leep"] <= 0 for row in image_rows)
    best = next(row for row in rows if row["rank"] == 1)
    probe = run("probe", best["features"], "--head", "logreg", "--json", cache=str(tmp_path))
    assert probe.returncode == 0 and json.loads(probe.stdout)["backbone"] == best["spec"]


def test_bad_metric_is_one_line_exit_2(tmp_path):
    r = run("rank", "--models", "effnet:lite0", "--data", "bundled:digits", "--metric", "accuracy",
            cache=str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert "accuracy" in r.stderr and "logme" in r.stderr and "Traceback" not in r.stderr


def test_rank_has_help(tmp_path):
    r = run("rank", "--help", cache=str(tmp_path))
    assert r.returncode == 0 and "--models" in r.stdout and "--metric" in r.stdout
