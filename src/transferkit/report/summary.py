"""The recommendation: which route to take, by an explicit rule on accuracy and cost.

Rule: among the strategies that finished, take the best score S* of the choice metric: validation accuracy
(the test split is never used to choose), or target accuracy when the target has labels. A strategy qualifies
when it is on the Pareto front of (wall time, score) and scores at least S* − tolerance (default 1 accuracy
point). The recommended route is the qualifying strategy with the least wall time (ties: fewer trainable
parameters). Results of an earlier version without validation scores are chosen on test accuracy, and the rule
says so.
"""

from __future__ import annotations

from transferkit.report.runner import ok_records, primary_metric

DEFAULT_TOLERANCE = 0.01


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points (cost, score) that no other point beats: lower-or-equal cost with higher-or-equal
    score, one of them strictly. Sorted by cost."""
    front = []
    for i, (c, s) in enumerate(points):
        dominated = any((c2 <= c and s2 >= s) and (c2 < c or s2 > s) for j, (c2, s2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def choice_metric(doc: dict) -> str:
    """The metric the recommendation is chosen by: target accuracy when the target has labels, else validation
    accuracy; test accuracy only for results of an earlier version that recorded no validation score."""
    metric = primary_metric(doc)
    if metric != "accuracy":
        return metric
    return "val_accuracy" if any("val_accuracy" in r["metrics"] for r in ok_records(doc)) else "accuracy"


def rule_text(metric: str, tolerance: float) -> str:
    text = (f"rule: the cheapest strategy (by wall time) on the Pareto front of wall time vs {metric} whose "
            f"{metric} is within {100 * tolerance:.1f} points of the best")
    if metric == "accuracy":
        text += " (chosen on the test split: these results are from a version that recorded no validation score)"
    return text


def recommend(doc: dict, tolerance: float = DEFAULT_TOLERANCE) -> dict | None:
    """The recommended strategy and why; None when no strategy finished."""
    recs = ok_records(doc)
    metric = choice_metric(doc)
    recs = [r for r in recs if metric in r["metrics"]]
    if not recs:
        return None
    points = [(float(r["wall_s"]), float(r["metrics"][metric])) for r in recs]
    best = max(range(len(recs)), key=lambda i: points[i][1])
    front = pareto_front(points)
    ok = [i for i in front if points[i][1] >= points[best][1] - tolerance - 1e-12]
    pick = min(ok, key=lambda i: (points[i][0], recs[i]["trainable_parameters"]))
    r, b = recs[pick], recs[best]
    if pick == best:
        why = (f"it scores best ({metric} {points[best][1]:.4f}) and no strategy within "
               f"{100 * tolerance:.1f} points of it is cheaper")
    else:
        gap = points[best][1] - points[pick][1]
        why = (f"{metric} {points[pick][1]:.4f}, "
               + (f"tied with {b['name']}," if gap <= 1e-12 else
                  f"{100 * gap:.1f} points below the best ({b['name']} {points[best][1]:.4f}),")
               + f" at {points[pick][0]:.1f} s instead of "
               f"{points[best][0]:.1f} s ({points[best][0] / max(points[pick][0], 1e-9):.1f}× less time) and "
               f"{r['trainable_parameters']:,} instead of {b['trainable_parameters']:,} trainable parameters")
    unchosen = [x["name"] for x in ok_records(doc) if metric not in x["metrics"]]
    return {"name": r["name"], "route": r["route"], "metric": metric, "score": points[pick][1],
            "test_score": r["metrics"].get(primary_metric(doc)), "wall_s": points[pick][0],
            "best": b["name"], "best_score": points[best][1], "tolerance": tolerance,
            "pareto": [recs[i]["name"] for i in front], "why": why, "rule": rule_text(metric, tolerance),
            "not_candidates": unchosen}


def baseline_verdict(doc: dict, rec: dict | None) -> list[str]:
    """What the comparison says about the strong simple baseline, plainly: whether it won, and which transfer
    routes lost to it on the reported (test or target) split. Empty when no baseline finished."""
    base = [r for r in ok_records(doc) if r["route"] == "baseline"]
    if not base or rec is None:
        return []
    b = base[0]
    test = primary_metric(doc)
    cm = rec["metric"]
    lines = []
    if rec["route"] == "baseline":
        others = [r for r in ok_records(doc) if r["route"] != "baseline" and cm in r["metrics"]]
        top = max(others, key=lambda r: r["metrics"][cm], default=None)
        lines.append(f"the baseline won: {b['name']} ({b.get('chosen')}) is recommended; "
                     + (f"no transfer route beat it on {cm} by more than {100 * rec['tolerance']:.1f} points (best "
                        f"transfer route {top['name']}: {cm} {top['metrics'][cm]:.4f} vs {b['metrics'][cm]:.4f})"
                        if top else "no transfer route finished"))
    else:
        lines.append(f"{rec['name']} beats the baseline {b['name']} on {cm}: {rec['score']:.4f} vs "
                     f"{b['metrics'].get(cm, float('nan')):.4f}; on {test}: "
                     f"{rec['test_score']:.4f} vs {b['metrics'][test]:.4f}")
    losing = [f"{r['name']} {r['metrics'][test]:.4f}" for r in ok_records(doc)
              if r["route"] != "baseline" and r["metrics"].get(test, 1.0) < b["metrics"][test]]
    if losing:
        lines.append(f"losing to the baseline ({b['metrics'][test]:.4f}) on {test}: " + ", ".join(losing))
    return lines


def summary_lines(doc: dict, tolerance: float = DEFAULT_TOLERANCE) -> list[str]:
    """What the terminal shows after the table: the recommendation, the rule, and what did not finish."""
    lines = []
    rec = recommend(doc, tolerance)
    if rec is None:
        lines.append("no strategy finished: nothing to recommend (see the errors above)")
    else:
        lines.append(f"recommended: {rec['name']} — {rec['why']}")
        lines.append(rec["rule"] + f"; Pareto front: {', '.join(rec['pareto'])}")
        if rec["not_candidates"]:
            lines.append(f"not candidates (no {rec['metric']}: validation was part of their training): "
                         + ", ".join(rec["not_candidates"]))
        lines += baseline_verdict(doc, rec)
    if rec is not None and rec["metric"] == "accuracy" and any(r["route"] == "adapt" for r in ok_records(doc)):
        lines.append("note: no target labels (--target-labels not given), so every route is judged on the source "
                     "test split; that cannot show what adaptation gains on the target (give --target-labels if you "
                     "have them)")
    for r in doc["strategies"]:
        if r.get("status") not in ("ok",):
            lines.append(f"{r['name']}: {r.get('status')}" + (f" — {r['error']}" if r.get("error") else ""))
    if doc.get("shift"):
        lines.append("shift diagnostics: " + doc["shift"]["verdict"])
    return lines


def table_rows(doc: dict) -> tuple[list[dict], list[str]]:
    """Flat rows for the terminal table, and its columns."""
    metric = primary_metric(doc)
    rows = []
    for r in doc["strategies"]:
        m = r.get("metrics") or {}
        rows.append({"strategy": r["name"], "status": r.get("status"), "val_accuracy": m.get("val_accuracy"),
                     "accuracy": m.get("accuracy"),
                     "macro_f1": m.get("macro_f1"), "target_accuracy": m.get("target_accuracy"),
                     "wall_s": r.get("wall_s"), "peak_mb": r.get("peak_memory_mb"),
                     "trainable": r.get("trainable_parameters"), "attempt": r.get("attempt")})
    cols = ["strategy", "status", "val_accuracy", "accuracy", "macro_f1",
            *(["target_accuracy"] if metric != "accuracy" else []),
            "wall_s", "peak_mb", "trainable", "attempt"]
    return rows, cols
