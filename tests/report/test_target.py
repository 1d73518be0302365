"""`compare --target`: shift diagnostics and an adaptation strategy, tweets → movie reviews (real VADER domains)."""

import json

import pytest
from report_helpers import main_in_process


@pytest.mark.slow
def test_target_adds_shift_diagnostics_adaptation_and_domain_projections(tmp_path):
    code, out, err = main_in_process(
        "compare", "--data", "bundled:sentiment-tweets", "--target", "bundled:sentiment-movies", "--target-labels",
        "--sample", "120", "--tsne-points", "160", "--strategies", "adapt:coral", "--out", str(tmp_path))
    assert code == 0, err
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["inputs"]["target"]["labelled"] and doc["inputs"]["target"]["n"] == 120
    shift = doc["shift"]
    assert shift["mmd"]["p_value"] < 0.05 and shift["shift"]  # tweets and movie reviews differ
    (coral,) = doc["strategies"]
    assert coral["status"] == "ok" and 0 < coral["metrics"]["target_accuracy"] <= 1
    assert coral["trainable_parameters"] > 0
    feats = doc["features"]
    assert coral["features_s"] == pytest.approx(feats["source_s"] + feats["target_s"], abs=2e-3)  # both domains
    assert (tmp_path / "runs" / "adapt-coral" / "model" / "model.json").exists()  # a model folder
    page = (tmp_path / "index.html").read_text()
    assert "Shift diagnostics" in page and "proxy A-distance" in page
    assert "before adaptation" in page and "after adaptation" in page and "target accuracy" in page
    assert "target_accuracy" in out and "shift diagnostics: shift" in out


def test_target_labels_are_used_only_when_asked():
    """Bundled sets and class folders carry labels anyway: without --target-labels they must not be used."""
    from transferkit.report import CompareSettings
    from transferkit.report.inputs import load_inputs

    base = dict(data="bundled:sentiment-tweets", target="bundled:sentiment-movies", sample=60)
    plain = load_inputs(CompareSettings(**base))
    assert plain.target is not None and plain.target_labels is None and not plain.record()["target"]["labelled"]
    labelled = load_inputs(CompareSettings(**base, target_labels=True))
    assert labelled.target_labels is not None and len(labelled.target_labels) == 60
    assert labelled.record()["target"]["labelled"]
