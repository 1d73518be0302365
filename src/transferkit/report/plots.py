"""The report's figures, drawn with matplotlib (Agg canvas, no display) and returned as embedded PNG data URIs."""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from transferkit.report.summary import pareto_front

ROUTE_MARKERS = {"probe": "o", "finetune": "s", "adapt": "^"}
ROUTE_COLOURS = {"probe": "#1f77b4", "finetune": "#d62728", "adapt": "#2ca02c"}


def _figure(w: float = 6.4, h: float = 4.2) -> Figure:
    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_data_uri(fig: Figure) -> str:
    """The figure as a `data:image/png;base64,…` URI (the page needs no other file and no network)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def cost_plot(recs: list[dict], cost: str, label: str, metric: str) -> str:
    """metric vs a cost (wall time or trainable parameters), log cost axis, the Pareto front drawn and ringed."""
    fig = _figure()
    ax = fig.add_subplot()
    xs = np.array([max(float(r[cost] or 0), 0.0) for r in recs])
    ys = np.array([float(r["metrics"][metric]) for r in recs])
    labels: dict[tuple[float, float], list[str]] = {}
    for r, x, y in zip(recs, xs, ys):
        ax.scatter([x], [y], marker=ROUTE_MARKERS.get(r["route"], "o"), color=ROUTE_COLOURS.get(r["route"]),
                   s=50, zorder=3)
        labels.setdefault((float(f"{x:.3g}"), round(float(y), 3)), []).append(r["name"])
    for (x, y), names in labels.items():  # strategies on the same spot share one label
        ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = pareto_front(list(zip(xs.tolist(), ys.tolist())))
    ax.step(xs[front], ys[front], where="post", color="0.4", linestyle="--", linewidth=1, zorder=2,
            label="Pareto front")
    ax.scatter(xs[front], ys[front], s=160, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
    if cost == "trainable_parameters":
        ax.set_xscale("symlog", linthresh=1)
    elif xs.min() > 0 and xs.max() / xs.min() > 20:
        ax.set_xscale("log")
    for route in dict.fromkeys(r["route"] for r in recs):
        ax.scatter([], [], marker=ROUTE_MARKERS.get(route, "o"), color=ROUTE_COLOURS.get(route), label=route)
    ax.set_xlabel(label)
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{metric.replace('_', ' ')} vs {label} (ringed: Pareto front)", fontsize=10)
    return to_data_uri(fig)


def learning_curves(recs: list[dict]) -> str | None:
    """Train loss and validation accuracy per epoch of every fine-tuning run that has a history."""
    runs = [r for r in recs if r.get("history")]
    if not runs:
        return None
    fig = _figure(9, 3.6)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for r in runs:
        ep = [h["epoch"] for h in r["history"]]
        loss_ax.plot(ep, [h["train_loss"] for h in r["history"]], marker="o", label=r["name"])
        if all("val_accuracy" in h for h in r["history"]):
            acc_ax.plot(ep, [h["val_accuracy"] for h in r["history"]], marker="o", label=r["name"])
    for ax, what in ((loss_ax, "train loss"), (acc_ax, "validation accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return to_data_uri(fig)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], title: str) -> str:
    """Confusion matrix (rows: true class, columns: predicted), counts written in the cells."""
    k = len(class_names)
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    size = min(3.2 + 0.45 * k, 9)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ticks = [c[:12] for c in class_names]
    ax.set_xticks(range(k), ticks, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center", fontsize=8)
    ax.set_yticks(range(k), ticks, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title(title, fontsize=10)
    return to_data_uri(fig)


def tsne_2d(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of standardised features (PCA to ≤ 50 dimensions first, as the t-SNE authors advise)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    X = np.asarray(X, np.float64)
    X = (X - X.mean(0)) / np.where(X.std(0) > 1e-12, X.std(0), 1.0)
    dims = min(50, X.shape[1], len(X) - 1)
    Z = PCA(dims, random_state=seed).fit_transform(X) if dims < X.shape[1] else X
    perplexity = float(min(30.0, max(2.0, (len(X) - 1) / 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(Z)


def scatter_2d(Y: np.ndarray, groups: np.ndarray, names: list[str], title: str) -> str:
    """Points of a 2-D projection coloured by group (class or domain)."""
    fig = _figure(5.6, 4.6)
    ax = fig.add_subplot()
    from matplotlib import colormaps

    colours = ([f"C{i}" for i in range(len(names))] if len(names) <= 10
               else [colormaps["tab20"](i % 20) for i in range(len(names))])
    for g, name in enumerate(names):
        sel = groups == g
        if sel.any():
            ax.scatter(Y[sel, 0], Y[sel, 1], s=8, alpha=0.7, label=f"{name} ({int(sel.sum())})",
                       color=colours[g])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_title(title, fontsize=10)
    return to_data_uri(fig)
