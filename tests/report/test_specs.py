"""Strategy specs, budgets and the recommendation rule (pure logic, no models)."""

import pytest

from transferkit.report import CompareError, parse_budget, parse_strategies, valid_specs
from transferkit.report.summary import pareto_front, recommend


def test_specs_come_from_the_route_registries():
    from transferkit.adapt import METHODS
    from transferkit.finetune import STRATEGIES
    from transferkit.heads import HEAD_NAMES

    specs = valid_specs()
    assert {f"probe:{h}" for h in HEAD_NAMES} <= set(specs)
    assert {f"finetune:{s}" for s in STRATEGIES} <= set(specs)
    assert {f"adapt:{m}" for m in METHODS} | {"adapt:auto"} <= set(specs)
    assert not any(s.startswith("adapt:") for s in valid_specs(with_target=False))
    got = parse_strategies(" probe:logreg, finetune:lora ,adapt:cdan+e", with_target=True)
    assert [s.name for s in got] == ["probe:logreg", "finetune:lora", "adapt:cdan+e"]
    assert got[2].folder == "adapt-cdan-plus-e"
    assert parse_strategies("baseline:tfidf,probe:svm,ensemble:caruana", with_target=False)[-1].route == "ensemble"
    with pytest.raises(CompareError, match="list it last"):
        parse_strategies("ensemble:caruana,probe:svm", with_target=False)


@pytest.mark.parametrize("text,words", [
    ("probe:forest", ["probe:forest", "probe:logreg", "finetune:lora", "adapt:dann"]),
    ("finetune", ["'finetune'", "finetune:full"]),
    ("probe:logreg,probe:logreg", ["listed twice"]),
    ("adapt:coral", ["--target"]),
    (" , ", ["empty"]),
])
def test_bad_specs_are_one_line_errors_naming_the_fix(text, words):
    with pytest.raises(CompareError) as e:
        parse_strategies(text, with_target=False)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_budget_durations():
    assert parse_budget("90s") == 90 and parse_budget("10m") == 600 and parse_budget("1h") == 3600
    assert parse_budget("1h30m") == 5400 and parse_budget("45") == 45 and parse_budget(None) is None
    for bad in ("ten minutes", "10x", "0s", "m"):
        with pytest.raises(CompareError, match="budget"):
            parse_budget(bad)


def test_pareto_front_keeps_only_undominated_points():
    pts = [(1.0, 0.80), (2.0, 0.85), (3.0, 0.84), (10.0, 0.90), (10.0, 0.70)]
    assert pareto_front(pts) == [0, 1, 3]


def _doc(rows):
    recs = [{"name": n, "route": n.split(":")[0], "status": "ok", "wall_s": t, "trainable_parameters": p,
             "metrics": {"accuracy": a}} for n, a, t, p in rows]
    return {"strategies": recs, "inputs": {"source": {}}}


def test_recommendation_is_the_cheapest_front_point_within_tolerance():
    doc = _doc([("probe:logreg", 0.905, 2.0, 385), ("finetune:full", 0.912, 300.0, 22_000_000),
                ("probe:knn", 0.80, 1.0, 0)])
    rec = recommend(doc, tolerance=0.01)
    assert rec["name"] == "probe:logreg" and rec["best"] == "finetune:full"
    assert "0.7 points below the best" in rec["why"] and "within 1.0 points" in rec["rule"]
    assert recommend(doc, tolerance=0.001)["name"] == "finetune:full"  # tighter rule: only the best qualifies
    assert recommend(_doc([]), 0.01) is None


def _vdoc(rows):
    """rows: (name, validation accuracy, test accuracy, wall s, trainable)."""
    recs = [{"name": n, "route": n.split(":")[0], "status": "ok", "wall_s": t, "trainable_parameters": p,
             "chosen": "C=1", "metrics": {"val_accuracy": v, "accuracy": a}} for n, v, a, t, p in rows]
    return {"strategies": recs, "inputs": {"source": {}}}


def test_the_choice_is_made_on_validation_never_on_test():
    # finetune:full is best on test but not on validation: the rule must not see the test split
    doc = _vdoc([("baseline:tfidf", 0.86, 0.84, 3.0, 90_000), ("probe:logreg", 0.90, 0.85, 8.0, 770),
                 ("finetune:full", 0.88, 0.93, 300.0, 22_000_000)])
    rec = recommend(doc, tolerance=0.01)
    assert rec["metric"] == "val_accuracy" and rec["name"] == "probe:logreg" and rec["test_score"] == 0.85
    assert "test split" not in rec["rule"]
    for r in doc["strategies"]:
        del r["metrics"]["val_accuracy"]  # results of an earlier version: chosen on test, and the rule says so
    old = recommend(doc, tolerance=0.01)
    assert old["name"] == "finetune:full" and "chosen on the test split" in old["rule"]


def test_the_report_says_plainly_when_the_baseline_wins_and_who_loses_to_it():
    from transferkit.report.summary import baseline_verdict, summary_lines

    doc = _vdoc([("baseline:tfidf", 0.90, 0.89, 3.0, 90_000), ("probe:logreg", 0.895, 0.86, 8.0, 770),
                 ("finetune:lora", 0.80, 0.79, 120.0, 70_000)])
    rec = recommend(doc, tolerance=0.01)
    assert rec["name"] == "baseline:tfidf"
    lines = baseline_verdict(doc, rec)
    assert lines[0].startswith("the baseline won: baseline:tfidf") and "probe:logreg" in lines[0]
    assert "losing to the baseline (0.8900) on accuracy: probe:logreg 0.8600, finetune:lora 0.7900" in lines[1]
    assert any(line.startswith("the baseline won") for line in summary_lines(doc, 0.01))
    doc = _vdoc([("baseline:tfidf", 0.80, 0.79, 3.0, 90_000), ("probe:logreg", 0.90, 0.88, 8.0, 770)])
    lines = baseline_verdict(doc, recommend(doc, 0.01))
    assert lines == ["probe:logreg beats the baseline baseline:tfidf on val_accuracy: 0.9000 vs 0.8000; on "
                     "accuracy: 0.8800 vs 0.7900"]
    assert baseline_verdict(_vdoc([("probe:logreg", 0.9, 0.9, 1.0, 1)]), None) == []


def test_baseline_specs_follow_the_data_modality():
    from transferkit.report.specs import check_modality, default_strategies

    assert default_strategies("text").startswith("baseline:tfidf,") and "baseline:pixels" in default_strategies(
        "image")
    check_modality(parse_strategies("baseline:tfidf,probe:svm", with_target=False), "text")
    with pytest.raises(CompareError, match="use baseline:pixels"):
        check_modality(parse_strategies("baseline:tfidf", with_target=False), "image")
    with pytest.raises(CompareError, match="probe:hybrid"):
        check_modality(parse_strategies("probe:hybrid", with_target=False), "image")
