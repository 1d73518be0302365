"""`shift_report`: is the target drawn from another distribution than the source, how big is the gap, which
classes move, and do the label proportions change? One table and a one-line verdict."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from transferkit.errors import AdaptError
from transferkit.shift.labels import bbse, class_drift
from transferkit.shift.twosample import mmd_test, proxy_a_distance

MIN_ITEMS = 5
ALPHA = 0.05


@dataclass
class ShiftReport:
    """Shift diagnostics of target vs source features; `verdict` is one line a person can read."""

    mmd: dict
    pad: dict
    verdict: str
    shift: bool
    classes: list[dict] = field(default_factory=list)
    label_shift: dict | None = None
    drift_basis: str | None = None

    def rows(self) -> list[dict]:
        """The headline numbers as (diagnostic, value, meaning) rows."""
        out = [
            {"diagnostic": "MMD² (Gaussian kernel, median heuristic)", "value": self.mmd["mmd2"],
             "meaning": f"permutation p = {self.mmd['p_value']:.4f} ({self.mmd['permutations']} permutations)"},
            {"diagnostic": "proxy A-distance", "value": self.pad["pad"],
             "meaning": f"domain classifier held-out error {self.pad['domain_error']:.3f} (0 = same, 2 = disjoint)"},
        ]
        if self.label_shift is not None:
            ls = self.label_shift
            out.append({"diagnostic": "label shift (BBSE, total variation)", "value": ls["tv"],
                        "meaning": "estimated target class proportions vs source"
                        + (f"; true TV {ls['true_tv']:.3f}" if "true_tv" in ls else "")
                        + (f"; {BBSE_CAVEAT}" if self.shift else "")})
        return out

    def as_dict(self) -> dict:
        """JSON-able form."""
        return {"shift": self.shift, "verdict": self.verdict, "mmd": self.mmd, "proxy_a_distance": self.pad,
                "label_shift": self.label_shift, "classes": self.classes, "drift_basis": self.drift_basis}


#: said beside every BBSE estimate when the features moved too: BBSE is exact only under pure label shift
BBSE_CAVEAT = ("BBSE assumes p(x|y) is the same in both domains, and the features moved (MMD), so this is a rough "
               "estimate")


def _size(pad: float) -> str:
    return "small" if pad < 0.5 else "moderate" if pad < 1.5 else "large"


def shift_report(Xs: np.ndarray, Xt: np.ndarray, *, ys: np.ndarray | None = None, yt: np.ndarray | None = None,
                 class_names: list[str] | None = None, permutations: int = 500, seed: int = 0,
                 alpha: float = ALPHA) -> ShiftReport:
    """Diagnose the shift from source features Xs to target features Xt.

    With source labels (ys, class_names), a logistic regression trained on half the source gives BBSE's
    confusion matrix (on the other half) and the target's predicted classes; per-class drift uses the target's
    labels yt when given, else those predicted classes. Labels never change the MMD or proxy A-distance.
    """
    Xs, Xt = np.asarray(Xs, np.float64), np.asarray(Xt, np.float64)
    for name, X in (("source", Xs), ("target", Xt)):
        if X.ndim != 2 or len(X) < MIN_ITEMS:
            raise AdaptError(f"the {name} has {len(X)} item(s); shift diagnostics need at least {MIN_ITEMS} "
                             "per side: add items")
    if Xs.shape[1] != Xt.shape[1]:
        raise AdaptError(f"source features have {Xs.shape[1]} dimensions but target features {Xt.shape[1]}: "
                         "extract both with the same backbone")
    mmd = mmd_test(Xs, Xt, permutations=permutations, seed=seed)
    pad = proxy_a_distance(Xs, Xt, seed=seed)
    shift = mmd["p_value"] < alpha
    classes: list[dict] = []
    label_shift = None
    basis = None
    if ys is not None and class_names:
        ys = np.asarray(ys, np.int64)
        classes, label_shift, basis = _label_diagnostics(Xs, ys, Xt, yt, list(class_names), seed)
    if shift:
        verdict = (f"shift: the target differs from the source (MMD p = {mmd['p_value']:.3g} < {alpha}); "
                   f"{_size(pad['pad'])} gap (proxy A-distance {pad['pad']:.2f} of 2)")
    else:
        verdict = (f"no shift detected (MMD p = {mmd['p_value']:.3g} ≥ {alpha}; proxy A-distance "
                   f"{pad['pad']:.2f} of 2)")
    if label_shift is not None:
        verdict += (f"; label proportions {'change' if label_shift['tv'] > 0.1 else 'look stable'} "
                    f"(BBSE TV {label_shift['tv']:.2f}" + (f"; {BBSE_CAVEAT}" if shift else "") + ")")
        label_shift["assumption_doubtful"] = bool(shift)
        moved = sorted((r for r in classes if r["drift"] is not None), key=lambda r: -r["drift"])[:3]
        if shift and moved:
            verdict += "; most drift: " + ", ".join(f"{r['name']} ({r['drift']:.2f})" for r in moved)
    return ShiftReport(mmd, pad, verdict, shift, classes, label_shift, basis)


def _label_diagnostics(Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray, yt: np.ndarray | None,
                       class_names: list[str], seed: int) -> tuple[list[dict], dict, str]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    k = len(class_names)
    counts = np.bincount(ys, minlength=k)
    if (counts > 0).sum() < 2 or counts[counts > 0].min() < 2:
        raise AdaptError("source labels need at least 2 classes with at least 2 items each for label diagnostics")
    mean, sd = Xs.mean(0), Xs.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    Zs, Zt = (Xs - mean) / sd, (Xt - mean) / sd
    tr, ho = train_test_split(np.arange(len(ys)), test_size=0.5, stratify=ys, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=1.0, max_iter=500, random_state=seed).fit(Zs[tr], ys[tr])
    pred_ho = clf.predict(Zs[ho])
    conf = np.zeros((k, k))
    np.add.at(conf, (pred_ho, ys[ho]), 1.0)
    conf /= len(ho)
    pred_t = clf.predict(Zt)
    mu = np.bincount(pred_t, minlength=k) / len(pred_t)
    prior = counts / counts.sum()
    est = bbse(conf, mu, prior)
    label_shift = {"source_prior": prior.tolist(), "target_prior": est["target_prior"].tolist(),
                   "weights": est["weights"].tolist(), "tv": est["tv"], "source_accuracy_heldout":
                   float((pred_ho == ys[ho]).mean())}
    if yt is not None:
        yt = np.asarray(yt, np.int64)
        true = np.bincount(yt, minlength=k) / len(yt)
        label_shift["true_target_prior"] = true.tolist()
        label_shift["true_tv"] = float(0.5 * np.abs(true - prior).sum())
        label_shift["source_classifier_target_accuracy"] = float((pred_t == yt).mean())
    basis = "target labels" if yt is not None else "predicted target classes"
    rows = class_drift(Zs, ys, Zt, yt if yt is not None else pred_t, k)
    for r, q in zip(rows, est["target_prior"], strict=True):
        r["name"] = class_names[r["class"]]
        r["source_share"] = float(prior[r["class"]])
        r["target_share_bbse"] = float(q)
    return rows, label_shift, basis
