"""`transferkit compare` end to end on 200 real tweets: SIGKILL + --resume, records, a failing strategy, budget,
resume checks, and the HTML report rendered in headless Chromium."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from report_helpers import DATA, DATA_ITEMS, cli_env, main_in_process

from transferkit.io import read_arrays


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "tk-cache"


STRATEGIES = "baseline:tfidf,probe:logreg,finetune:lora,finetune:head"


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


@pytest.fixture(scope="module")
def killed(tmp_path_factory, cache):
    """`compare` in its own process, SIGKILLed as soon as its first strategy finished: (folder, results then)."""
    out = tmp_path_factory.mktemp("report")
    args = ["compare", *DATA, "--strategies", STRATEGIES, "--epochs", "1",
            "--finetune-param", "lora_targets=nosuchlayer", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "transferkit.cli", *args], env=cli_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results, deadline = out / "results.json", time.monotonic() + 300
    before = None
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists():
            doc = json.loads(results.read_text())  # written atomically: never half a file
            if any(r["status"] == "ok" for r in doc["strategies"]):
                os.kill(proc.pid, signal.SIGKILL)
                before = doc
                break
        time.sleep(0.05)
    proc.wait()
    assert before is not None, "no strategy finished before the deadline"
    return out, args, json.loads(results.read_text())


@pytest.fixture(scope="module")
def report(killed, cache):
    """The killed comparison resumed (in this process; strategies in child processes): the baseline that finished
    before the kill, a probe, a LoRA run that fails on a bad target layer, then a 1-epoch head fine-tune."""
    out, args, _ = killed
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERKIT_CACHE", str(cache))
        code, stdout, stderr = main_in_process(*args, "--resume")
    assert code == 0, stderr
    return out, subprocess.CompletedProcess([], code, stdout, stderr), json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_sigkill_then_resume_reruns_nothing_that_finished(killed, report):
    out, _, before = killed
    assert [r["status"] for r in before["strategies"]] == ["ok", "pending", "pending", "pending"]
    for _ in range(100):  # the strategy running at the kill dies with its parent (PR_SET_PDEATHSIG)
        if not _children_of(out):
            break
        time.sleep(0.1)
    assert _children_of(out) == []
    _, r, after = report
    log = r.stderr.replace("\n", " ")
    first, after_first = before["strategies"][0], after["strategies"][0]
    assert after_first["attempt"] == 1 and after_first["finished_at"] == first["finished_at"]  # untouched
    assert "baseline:tfidf: skipped, finished in attempt 1" in log and "baseline:tfidf: running" not in log
    assert "probe:logreg: running (attempt 1)" in log and "finetune:lora: running (attempt 1)" in log
    assert "finetune:head: running (attempt 1)" in log
    assert [x["name"] for x in after["strategies"]] == STRATEGIES.split(",")


@pytest.mark.slow
def test_every_strategy_gets_a_record_and_a_failure_does_not_stop_the_others(report):
    out, r, doc = report
    recs = {x["name"]: x for x in doc["strategies"]}
    assert list(recs) == ["baseline:tfidf", "probe:logreg", "finetune:lora", "finetune:head"]
    lora = recs.pop("finetune:lora")
    assert lora["status"] == "failed" and "nosuchlayer" in lora["error"] and "metrics" not in lora
    assert "finetune:lora: failed" in r.stdout
    split = read_arrays(out / "split.safetensors")
    assert len(split["test"]) == doc["inputs"]["source"]["test"] == 30
    for rec in recs.values():  # the ones after the failure ran too, all on the same test split
        assert rec["status"] == "ok" and rec["attempt"] == 1
        assert set(rec["metrics"]) == {"accuracy", "macro_f1", "val_accuracy", "val_macro_f1"}
        assert 0.5 < rec["metrics"]["accuracy"] <= 1 and 0.5 < rec["metrics"]["val_accuracy"] <= 1
        assert rec["wall_s"] > 0 and 50 < rec["peak_memory_mb"] < 8000
        preds = json.loads((out / "runs" / rec["name"].replace(":", "-") / "predictions.json").read_text())
        assert len(preds["y_true"]) == len(preds["y_pred"]) == 30
        acc = np.mean(np.asarray(preds["y_true"]) == np.asarray(preds["y_pred"]))
        assert acc == pytest.approx(rec["metrics"]["accuracy"])
    y_true = {tuple(json.loads(open(x["artefacts"]["predictions"]).read())["y_true"]) for x in recs.values()}
    assert len(y_true) == 1  # the same test items in the same order for every route
    assert recs["probe:logreg"]["trainable_parameters"] == 384 + 1  # binary logistic regression on 384 features
    head = recs["finetune:head"]
    assert head["trainable_parameters"] == 2 * 384 + 2 and len(head["history"]) == 1
    assert (out / "runs" / "finetune-head" / "run" / "history.json").exists()
    base = recs["baseline:tfidf"]
    assert base["features_s"] == 0 and base["trainable_parameters"] > 1000 and base["chosen"].split()[0] in (
        "svm", "logreg")
    assert "recommended:" in r.stdout
    assert "rule: the cheapest strategy (by wall time) on the Pareto front of wall time vs val_accuracy" in r.stdout
    assert "the baseline won:" in r.stdout or "beats the baseline baseline:tfidf" in r.stdout
    assert str(out / "index.html") in r.stdout.replace("\n", "")


@pytest.mark.slow
def test_the_recommended_route_is_handed_over_as_a_model_folder(report):
    """OUT/best is the recommended strategy's model folder: it predicts what that strategy predicted."""
    from transferkit.model import load_model
    from transferkit.report import recommend

    out, r, doc = report
    rec = recommend(doc)
    assert doc["best"]["name"] == rec["name"] and doc["best"]["path"] == str(out / "best")
    assert f"transferkit predict {out / 'best'}" in r.stdout.replace("\n", "")
    assert not (out / "best" / "state").exists() and (out / "best" / "model.json").exists()
    model = load_model(out / "best")
    assert model.info.kind == rec["name"].split(":")[0]
    record = next(x for x in doc["strategies"] if x["name"] == rec["name"])
    preds = json.loads(open(record["artefacts"]["predictions"]).read())
    assert list(model.predict(DATA_ITEMS(doc))) == preds["y_pred"]
    page = (out / "index.html").read_text()
    assert f"transferkit predict {out / 'best'}" in page


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, browser, tmp_path):
    out, _, doc = report
    page = (out / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched at view time
    browser.get((out / "index.html").as_uri())
    assert browser.title == "transferkit compare"
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt])")
    # two cost plots, learning curves, the best run's confusion matrix, the t-SNE by class
    assert len(images) == 5 and all(c and w > 0 and h > 0 for c, w, h, _ in images), images
    assert any("learning" in alt or "epoch" in alt for *_, alt in images)
    table = browser.execute_script("""
        return Array.from(document.querySelectorAll('#results tbody tr')).map(tr => {
            const row = {};
            tr.querySelectorAll('td[data-key]').forEach(td => row[td.dataset.key] = td.textContent);
            return row; });""")
    assert [t["name"] for t in table] == [r["name"] for r in doc["strategies"]]
    for t, r in zip(table, doc["strategies"]):
        assert t["status"] == r["status"]
        m = r.get("metrics") or {}
        for key, want, places in (("accuracy", m.get("accuracy"), 4), ("macro_f1", m.get("macro_f1"), 4),
                                  ("val_accuracy", m.get("val_accuracy"), 4),
                                  ("wall_s", r.get("wall_s"), 2), ("peak_memory_mb", r.get("peak_memory_mb"), 1),
                                  ("trainable_parameters", r.get("trainable_parameters"), 0)):
            if want is None:
                assert t[key] == "—", (r["name"], key)
            else:
                assert float(t[key].replace(",", "")) == pytest.approx(want, abs=0.51 * 10**-places), (r["name"], key)
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_reusing_a_report_folder_needs_resume_and_the_same_settings(report):
    out, _, _ = report
    code, _, err = main_in_process("compare", *DATA, "--strategies", "probe:logreg", "--out", str(out))
    assert code == 2 and "already holds a comparison" in err and "--resume" in err
    code, _, err = main_in_process("compare", *DATA, "--seed", "1", "--strategies", "probe:logreg", "--resume",
                                   "--out", str(out))
    assert code == 2 and "other settings (seed" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_spec_is_one_line_listing_the_valid_ones(tmp_path):
    code, _, err = main_in_process("compare", *DATA, "--strategies", "probe:logreg,probe:forest", "--out",
                                   str(tmp_path / "r"))
    assert code == 2 and "Traceback" not in err
    line = err.strip()
    assert len(line.splitlines()) == 1 and "probe:forest" in line and "probe:svm" in line and "finetune:lora" in line
    assert not (tmp_path / "r").exists()


def test_budget_stops_starting_strategies(tmp_path):
    code, out, err = main_in_process("compare", *DATA, "--strategies", "probe:logreg,probe:svm", "--budget", "0.01s",
                                     "--out", str(tmp_path))
    assert code == 0, err
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [x["status"] for x in doc["strategies"]] == ["skipped", "skipped"]
    assert "budget 0.01 s spent" in doc["strategies"][0]["error"] and "skipped, budget spent" in err
    assert not (tmp_path / "runs").exists()  # nothing was started
    assert "no strategy finished" in out and "nothing to plot" in (tmp_path / "index.html").read_text()
