"""`transferkit fit` end to end on real SMS spam: the baseline, a probe and a head fine-tune, chosen on validation,
handed over as OUT/best that predicts."""

import json

import pytest
from test_cli import run

from transferkit.finetune.config import DEFAULT_LR
from transferkit.fit import PORTFOLIO, portfolio
from transferkit.report import CompareError


def test_the_portfolio_starts_with_the_baseline_and_knows_each_strategys_rate():
    assert portfolio("text").split(",")[0] == "baseline:tfidf"
    assert portfolio("image").split(",")[0] == "baseline:pixels"
    assert all(s.split(":")[1] in DEFAULT_LR for p in PORTFOLIO.values() for s in p if s.startswith("finetune"))
    assert DEFAULT_LR["lora"] > DEFAULT_LR["full"]  # LoRA's rate is not full fine-tuning's
    assert "finetune:contrastive" in PORTFOLIO["text"] and "finetune:contrastive" not in PORTFOLIO["image"]
    with pytest.raises(CompareError, match="image or text"):
        portfolio("audio")


@pytest.mark.slow
def test_fit_chooses_on_validation_and_hands_over_a_model(tmp_path):
    out = tmp_path / "fit"
    r = run("fit", "--data", "bundled:sms-spam", "--sample", "300", "--strategies",
            "baseline:tfidf,probe:logreg,finetune:head", "--epochs", "1", "--budget", "10m", "--out", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "results.json").read_text())
    assert [s["status"] for s in doc["strategies"]] == ["ok", "ok", "ok"] and doc["fit"]["budget_s"] == 600
    head = next(s for s in doc["strategies"] if s["name"] == "finetune:head")
    assert head["settings"]["lr"] == DEFAULT_LR["head"] and head["settings"]["patience"] == 2
    from transferkit.report import recommend

    rec = recommend(doc, doc["fit"]["tolerance"])
    assert rec["metric"] == "val_accuracy" and doc["best"]["name"] == rec["name"]
    best = max(s["metrics"]["val_accuracy"] for s in doc["strategies"])
    assert rec["score"] >= best - 0.01  # within the tolerance of the best on validation
    assert "the baseline won:" in r.stdout or "beats the baseline baseline:tfidf" in r.stdout
    assert f"transferkit predict {out / 'best'}" in r.stdout.replace("\n", "")
    assert r.stderr.count("leader so far:") == 3  # a live leaderboard line after every strategy
    texts = tmp_path / "new.csv"
    texts.write_text('text\n"WINNER!! Claim your free prize now, call 09061701461"\nsee you at lunch tomorrow?\n')
    p = run("predict", str(out / "best"), "--data", str(texts), "--out", str(tmp_path / "p.csv"))
    assert p.returncode == 0, p.stderr
    import csv

    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [row["prediction"] for row in rows] == ["spam", "ham"]
