"""The report page `index.html`: one self-contained file (inline CSS, images as data: URIs, no scripts, no
network at view time) with the results table, cost plots, learning curves, the best run's confusion
matrix, 2-D projections of the features and, with a target, the shift diagnostics."""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from transferkit.io import atomic_write
from transferkit.report import plots
from transferkit.report.runner import ok_records, predictions, primary_metric
from transferkit.report.summary import DEFAULT_TOLERANCE, baseline_verdict, recommend

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.88rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f4f4}
tr.recommended td{background:#eef8ee}tr.failed td,tr.interrupted td{background:#fdeeee}
tr.skipped td,tr.pending td{color:#888}
.figs{display:flex;flex-wrap:wrap;gap:1rem}.figs img{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:.9rem}.rec{background:#eef8ee;border:1px solid #b9dfb9;padding:.6rem .8rem}
code{background:#f4f4f4;padding:0 .2rem}
"""


def _e(v: object) -> str:
    return html.escape("" if v is None else str(v))


def _num(v: object, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def columns(doc: dict) -> list[tuple[str, str, Callable[[dict], object], str]]:
    """(key, header, value getter, number format) of the results table; the page test reads the same keys."""
    cols = [("val_accuracy", "validation accuracy", lambda r: (r.get("metrics") or {}).get("val_accuracy"), ".4f"),
            ("accuracy", "test accuracy", lambda r: (r.get("metrics") or {}).get("accuracy"), ".4f"),
            ("macro_f1", "test macro-F1", lambda r: (r.get("metrics") or {}).get("macro_f1"), ".4f")]
    if primary_metric(doc) == "target_accuracy":
        cols += [("target_accuracy", "target accuracy", lambda r: (r.get("metrics") or {}).get("target_accuracy"),
                  ".4f"),
                 ("target_macro_f1", "target macro-F1", lambda r: (r.get("metrics") or {}).get("target_macro_f1"),
                  ".4f")]
    cols += [("wall_s", "wall time (s)", lambda r: r.get("wall_s"), ".2f"),
             ("peak_memory_mb", "peak memory (MB)", lambda r: r.get("peak_memory_mb"), ".1f"),
             ("trainable_parameters", "trainable parameters", lambda r: r.get("trainable_parameters"), ",d")]
    return cols


def _table(doc: dict, recommended: str | None) -> str:
    cols = columns(doc)
    head = "".join(f"<th>{_e(h)}</th>" for h in ["strategy", "status", *[c[1] for c in cols], "chosen / notes"])
    rows = []
    for r in doc["strategies"]:
        status = r.get("status", "")
        cls = "recommended" if r["name"] == recommended else status
        cells = [f'<td data-key="name">{_e(r["name"])}</td>', f'<td data-key="status">{_e(status)}</td>']
        cells += [f'<td class="num" data-key="{k}">{_num(get(r), fmt)}</td>' for k, _, get, fmt in cols]
        note = r.get("error") if status != "ok" else r.get("chosen")
        cells.append(f'<td data-key="notes">{_e(note)}</td>')
        rows.append(f'<tr class="{_e(cls)}" data-name="{_e(r["name"])}">{"".join(cells)}</tr>')
    return f'<table id="results"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _img(uri: str, alt: str) -> str:
    return f'<figure><img src="{uri}" alt="{_e(alt)}"><figcaption class="note">{_e(alt)}</figcaption></figure>'


def _best(doc: dict) -> dict | None:
    metric = primary_metric(doc)
    recs = [r for r in ok_records(doc) if metric in r["metrics"]]
    return max(recs, key=lambda r: r["metrics"][metric]) if recs else None


def _projections(doc: dict, max_points: int, seed: int) -> list[str]:
    from transferkit.data import stratified_sample
    from transferkit.features import FeatureSet

    feats = doc.get("features") or {}
    if not feats.get("source"):
        return []
    fs = FeatureSet.open(feats["source"])
    X, y = fs.features(), np.asarray(fs.labels())
    names = list(doc["inputs"]["source"]["classes"])
    has_target = bool(feats.get("target"))
    cap = max_points // 2 if has_target else max_points
    idx = stratified_sample(y, min(cap, len(y)), seed=seed)
    out = [_img(plots.scatter_2d(plots.tsne_2d(X[idx], seed), y[idx], names,
                                 f"t-SNE of {len(idx)} source features by class"),
                f"t-SNE of {len(idx)} of {len(y)} source items' frozen features ({doc['inputs']['backbone']}), "
                "coloured by class")]
    if not has_target:
        return out
    Xt = FeatureSet.open(feats["target"]).features()
    tidx = np.sort(np.random.default_rng(seed).permutation(len(Xt))[: min(cap, len(Xt))])
    both = np.vstack([X[idx], Xt[tidx]])
    dom = np.r_[np.zeros(len(idx), int), np.ones(len(tidx), int)]
    out.append(_img(plots.scatter_2d(plots.tsne_2d(both, seed), dom, ["source", "target"],
                                     "before adaptation: frozen features by domain"),
                    "before adaptation: t-SNE of source and target frozen features, coloured by domain"))
    metric = primary_metric(doc)
    adapted = [r for r in ok_records(doc) if r["route"] == "adapt" and r.get("artefacts", {}).get("run")]
    if adapted:
        from transferkit.adapt import load_run

        runs = [(r, load_run(r["artefacts"]["run"])) for r in adapted]
        best, run = max(runs, key=lambda p: p[0]["metrics"].get(metric, -1))
        # each domain through its own side of the classifier: source items as it was trained on them (CORAL's
        # recolouring, the source's standardisation), target items as it predicts them
        after = np.vstack([run.model.source_embed(X[idx]), run.model.embed(Xt[tidx])])
        note = ""
        out.append(_img(plots.scatter_2d(plots.tsne_2d(after, seed), dom, ["source", "target"],
                                         f"after adaptation: {best['name']} representation by domain"),
                        f"after adaptation: t-SNE of what the {best['name']} classifier reads (same items), "
                        f"coloured by domain{note}"))
    else:
        out.append('<p class="note">No adaptation strategy finished, so there is no after-adaptation '
                   "projection.</p>")
    return out


def _shift(doc: dict) -> str:
    sh = doc.get("shift")
    if not sh:
        return ""
    rows = "".join(f"<tr><td>{_e(r['diagnostic'])}</td><td class='num'>{r['value']:.4f}</td>"
                   f"<td>{_e(r['meaning'])}</td></tr>" for r in sh["rows"])
    parts = [f"<h2>Shift diagnostics</h2><p>{_e(sh['verdict'])}</p>",
             f"<table id='shift'><tr><th>diagnostic</th><th>value</th><th>meaning</th></tr>{rows}</table>"]
    if sh.get("classes"):
        body = "".join(
            f"<tr><td>{_e(c['name'])}</td><td class='num'>{c['n_source']}</td><td class='num'>{c['n_target']}</td>"
            f"<td class='num'>{_num(c.get('drift'), '.3f')}</td><td class='num'>{c['source_share']:.3f}</td>"
            f"<td class='num'>{c['target_share_bbse']:.3f}</td></tr>" for c in sh["classes"])
        parts.append(f"<p class='note'>Per-class drift (target classes from {_e(sh.get('drift_basis'))}).</p>"
                     "<table><tr><th>class</th><th>source items</th><th>target items</th><th>drift</th>"
                     f"<th>source share</th><th>target share (BBSE)</th></tr>{body}</table>")
    return "".join(parts)


def render_report(doc: dict, out: str | Path, *, tolerance: float = DEFAULT_TOLERANCE, max_points: int = 1000
                  ) -> Path:
    """Write `out/index.html` for the results document `doc`; returns its path."""
    out = Path(out)
    s, inp = doc["settings"], doc["inputs"]
    metric = primary_metric(doc)
    rec = recommend(doc, tolerance)
    recs = [r for r in ok_records(doc) if metric in r["metrics"]]
    target = ""
    if s.get("target"):
        how = "labels used for evaluation only" if inp["target"]["labelled"] else "unlabelled"
        target = f"Target: {_e(s['target'])} ({inp['target']['n']} items, {how})."
    body = [f"<h1>transferkit compare: {_e(inp['backbone'])} on {_e(s['data'])}</h1>",
            f"<p class='note'>{inp['source']['n']} labelled items ({inp['source']['train']} train / "
            f"{inp['source']['val']} validation / {inp['source']['test']} test, seed {s['seed']}); every strategy "
            f"uses this split. {target}</p>"]
    if rec:
        best = doc.get("best") or {}
        model = (f"<br>Its model folder: <code>{_e(best['path'])}</code> — use it with <code>transferkit predict "
                 f"{_e(best['path'])} --data …</code>, <code>transferkit serve</code> or "
                 "<code>transferkit export</code>." if best.get("path") and best.get("name") == rec["name"] else "")
        verdict = "".join(f"<br><b>{_e(line)}</b>" for line in baseline_verdict(doc, rec))
        body.append(f"<p class='rec'><b>Recommended: {_e(rec['name'])}</b> — {_e(rec['why'])}.{model}{verdict}<br>"
                    f"<span class='note'>{_e(rec['rule'])}.</span></p>")
    else:
        body.append("<p class='rec'>No strategy finished: nothing to recommend.</p>")
    body += ["<h2>Results</h2>", _table(doc, rec["name"] if rec else None),
             "<p class='note'>Wall time: the route's own fit plus, for feature routes, the time extracting the "
             "frozen features it is built on took (probe: source; adapt: source and target). Peak memory: peak "
             "resident memory of the strategy's own process. Trainable parameters: numbers the route fits (a kNN "
             "head stores its training set but fits none).</p>"]
    body.append("<h2>Accuracy against cost</h2>")
    if recs:
        body.append("<div class='figs'>" + _img(plots.cost_plot(recs, "wall_s", "wall time (s)", metric),
                                               f"{metric} vs wall time; ringed: Pareto front")
                    + _img(plots.cost_plot(recs, "trainable_parameters", "trainable parameters", metric),
                           f"{metric} vs trainable parameters; ringed: Pareto front") + "</div>")
    else:
        body.append("<p class='note'>No strategy finished, so there is nothing to plot.</p>")
    body.append("<h2>Learning curves</h2>")
    curves = plots.learning_curves(recs)
    tuned = [r for r in recs if r["route"] == "finetune"]
    if curves:
        body.append(_img(curves, "train loss and validation accuracy per epoch of each fine-tuning run (a point "
                                 "short of a whole epoch: the run stopped inside it)"))
    elif tuned:
        body.append("<p class='note'>No learning curves: the fine-tuning runs that finished recorded no epoch.</p>")
    else:
        body.append("<p class='note'>No learning curves: they come from fine-tuning runs, and no fine-tuning "
                    "strategy finished in this comparison.</p>")
    stops = [f"{_e(r['name'])}: {_e(r['stopped'])}" for r in tuned if r.get("stopped")]
    if stops:
        body.append("<p class='note'>How runs ended: " + "; ".join(stops) + ".</p>")
    best = _best(doc)
    if best is not None:
        on_target = metric == "target_accuracy"
        pair = predictions(best, target=on_target)
        if pair is not None:
            where = "target" if on_target else "test split"
            body += ["<h2>Confusion matrix of the best run</h2>",
                     _img(plots.confusion(*pair, list(inp["source"]["classes"]), f"{best['name']} on the {where}"),
                          f"confusion matrix of {best['name']} (best {metric}) on the {where}")]
    body.append("<h2>Features in 2-D</h2><div class='figs'>" + "".join(_projections(doc, max_points, s["seed"]))
                + "</div>")
    body.append(_shift(doc))
    body.append(f"<p class='note'>Written by transferkit from results.json ({_e(doc.get('updated_at'))}).</p>")
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>transferkit compare</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
    path = out / "index.html"
    atomic_write(path, lambda p: p.write_text(page, encoding="utf-8"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o644 & ~umask)  # a page to share or serve, not a private temp file
    return path
