"""Kill `transferkit compare` (SIGKILL) after its first strategy finished; `--resume` reruns nothing finished."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.report.conftest import DATA, cli_env, main_in_process

STRATEGIES = "probe:logreg,probe:svm"


def _children_of(out: Path) -> list[int]:
    """Live strategy processes working for the report folder `out`."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "transferkit.report.child" in cmd and str(out) in cmd:
                pids.append(int(d.name))
    return pids


@pytest.mark.slow
def test_sigkill_then_resume_reruns_nothing_that_finished(tmp_path, monkeypatch):
    cache = tmp_path.parent / "tk-cache"
    out = tmp_path / "report"
    args = ["compare", *DATA, "--strategies", STRATEGIES, "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "transferkit.cli", *args], env=cli_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.json"
    deadline = time.monotonic() + 300
    first = None
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists():
            doc = json.loads(results.read_text())  # written atomically: never half a file
            done = [r for r in doc["strategies"] if r["status"] == "ok"]
            if done:
                first = done[0]
                break
        time.sleep(0.05)
    assert first is not None, "no strategy finished before the deadline"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = json.loads(results.read_text())
    assert [r["status"] for r in before["strategies"]].count("ok") < 2, "compare finished before it was killed"
    for _ in range(100):  # the running strategy's process dies with its parent (PR_SET_PDEATHSIG)
        if not _children_of(out):
            break
        time.sleep(0.1)
    assert _children_of(out) == []

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(cache))
    code, _, stderr = main_in_process(*args, "--resume")  # the rerun in this process; strategies in children
    assert code == 0, stderr
    after = {r["name"]: r for r in json.loads(results.read_text())["strategies"]}
    assert list(after) == STRATEGIES.split(",") and all(r["status"] == "ok" for r in after.values())
    for r in before["strategies"]:
        if r["status"] == "ok":  # untouched: same attempt, same timestamps, reported as skipped
            assert after[r["name"]]["attempt"] == 1
            assert after[r["name"]]["finished_at"] == r["finished_at"]
            assert f"{r['name']}: skipped, finished in attempt 1" in stderr.replace("\n", " ")
        else:
            assert f"{r['name']}: running" in stderr.replace("\n", " ")
    assert (out / "index.html").exists()
