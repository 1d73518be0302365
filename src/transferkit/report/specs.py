"""Strategy specs of `compare` (`probe:logreg`, `finetune:lora`, `adapt:dann`, …) and the `--budget` duration.

The valid specs are read from the registries of the routes themselves (head families, fine-tuning
strategies, adaptation methods), so a route that lands appears here with no edit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from transferkit.errors import TransferkitError

ROUTES = ("baseline", "probe", "finetune", "adapt", "ensemble")


class CompareError(TransferkitError):
    """A comparison cannot start or continue as asked (bad strategy spec, bad budget, mismatched --resume)."""


@dataclass(frozen=True)
class Strategy:
    """One route with one method: `route:method`, e.g. probe:svm."""

    route: str
    method: str

    @property
    def name(self) -> str:
        return f"{self.route}:{self.method}"

    @property
    def folder(self) -> str:
        """A file-system-safe folder name for its artefacts (cdan+e → cdan-plus-e)."""
        return self.name.replace(":", "-").replace("+", "-plus-")


def methods(route: str) -> tuple[str, ...]:
    """The methods a route offers, from that route's own registry."""
    if route == "baseline":
        from transferkit.baselines import BASELINES

        return tuple(BASELINES)
    if route == "ensemble":
        return ("caruana",)  # greedy selection over the strategies listed before it (transferkit.model.ensemble)
    if route == "probe":
        from transferkit.heads import HEAD_NAMES, heads_for

        # + hybrid: TF-IDF beside the embeddings in one linear model (text; transferkit.baselines.hybrid)
        return (*(h for h in HEAD_NAMES if h == "auto" or h in heads_for("classification")), "hybrid")
    if route == "finetune":
        from transferkit.finetune import STRATEGIES

        return tuple(STRATEGIES)
    if route == "adapt":
        from transferkit.adapt import METHODS

        return (*METHODS, "auto")
    raise CompareError(f"unknown route {route!r}: use one of {', '.join(ROUTES)}")


def valid_specs(with_target: bool = True) -> list[str]:
    """Every spec `compare` accepts (adapt:* only with a target)."""
    routes = ROUTES if with_target else ("baseline", "probe", "finetune", "ensemble")
    return [f"{r}:{m}" for r in routes for m in methods(r)]


def default_strategies(modality: str) -> str:
    """What `compare` runs when --strategies is not given: the data's baseline, two probes and a head fine-tune."""
    from transferkit.baselines import baseline_for

    return f"baseline:{baseline_for(modality)},probe:logreg,probe:svm,finetune:head"


def check_modality(specs: list[Strategy], modality: str) -> None:
    """A baseline reads raw items of one modality: refuse the other's before anything runs."""
    from transferkit.baselines import BASELINES, baseline_for

    for s in specs:
        if s.route == "baseline" and BASELINES[s.method] != modality:
            raise CompareError(f"strategy {s.name!r} reads {BASELINES[s.method]} and the data are {modality}: use "
                               f"baseline:{baseline_for(modality)}")
        if s.name == "probe:hybrid" and modality != "text":
            raise CompareError(f"strategy 'probe:hybrid' puts TF-IDF beside the embeddings: it reads text and the "
                               f"data are {modality}; drop it")


def parse_strategies(text: str, *, with_target: bool) -> list[Strategy]:
    """Comma-separated specs → strategies, in order; a bad or repeated one is a one-line CompareError."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise CompareError("--strategies is empty: give e.g. probe:logreg,probe:svm,finetune:head")
    out: list[Strategy] = []
    for name in names:
        route, sep, method = name.partition(":")
        if not sep or route not in ROUTES or method not in methods(route):
            raise CompareError(f"unknown strategy {name!r}: valid strategies are {', '.join(valid_specs())} "
                               "(adapt:* need --target)")
        if route == "adapt" and not with_target:
            raise CompareError(f"strategy {name!r} adapts to a target domain: add --target with unlabelled "
                               "target data, or drop it")
        s = Strategy(route, method)
        if out and out[-1].route == "ensemble":
            raise CompareError(f"{out[-1].name!r} combines the strategies before it: list it last in --strategies")
        if s in out:
            raise CompareError(f"strategy {name!r} is listed twice in --strategies: list it once")
        out.append(s)
    return out


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def parse_budget(text: str | None) -> float | None:
    """'90s', '10m', '1h', '1h30m' or plain seconds → seconds; None or '' → no budget."""
    if text is None or not text.strip():
        return None
    t = text.strip().lower()
    m = _DURATION.fullmatch(t)
    if not m or not any(m.groups()):
        raise CompareError(f"--budget {text!r} is not a duration: write e.g. 90s, 10m, 1h or 1h30m")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    seconds = 3600 * h + 60 * mi + s
    if seconds <= 0:
        raise CompareError(f"--budget {text!r} is zero: give a positive duration such as 10m")
    return seconds
