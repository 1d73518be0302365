"""On real data with seed 0, adaptation beats source-only logistic regression on the held-out target half by a
measured margin:

- MNIST → UCI digits: EfficientNet-Lite0 at 64 px, 600 items a side (the session's shared features);
- movies → tweets: all-MiniLM-L6-v2 on 1,000 movie snippets and 600 tweets (stratified subsets of the VADER
  domains, for test time; the full-size numbers are in benchmarks/results/adapt.txt).

Measured margins are in each test's comments; the asserted ones leave room for platform float differences. The
features are fp32 on every host (the margins were measured on fp32 features)."""

import numpy as np
import pytest

from transferkit.adapt import adapt_features
from transferkit.adapt.align import oracle
from transferkit.adapt.benchmark import target_halves

pytestmark = pytest.mark.slow
DIGITS = [str(i) for i in range(10)]


def _accuracies(Xs, ys, Xt, yt, classes, methods):
    a, b = target_halves(yt, 0)
    out = {m: adapt_features(Xs, ys, Xt[a], classes, method=m, seed=0, Xt_eval=Xt[b],
                             yt_eval=yt[b]).metrics["target_accuracy"] for m in methods}
    out["oracle"] = float((oracle(Xt[a], yt[a], classes).predict(Xt[b]) == yt[b]).mean())
    return out


def test_coral_dann_cdan_mmd_beat_source_only_on_mnist_to_digits(digit_features):
    (Xs, ys), (Xt, yt) = digit_features["mnist"], digit_features["digits"]
    acc = _accuracies(Xs, ys, Xt, yt, DIGITS, ["source-only", "coral", "dann", "cdan", "mmd"])
    base = acc["source-only"]
    assert acc["oracle"] > 0.8  # the features separate the digits in-domain: the gap is the shift
    assert 0.12 < base < acc["oracle"] - 0.4  # above chance yet far off
    assert acc["coral"] > base + 0.08  # measured +0.137 (0.307 vs 0.170)
    assert acc["dann"] > base + 0.15  # measured +0.240 (0.410)
    assert acc["cdan"] > base + 0.15  # measured +0.207 (0.377)
    assert acc["mmd"] > base + 0.15  # measured +0.223 (0.393)


@pytest.fixture(scope="module")
def movies_tweets(minilm):
    from transferkit import datasets
    from transferkit.data import stratified_sample
    from transferkit.features import extract_features

    out = {}
    for name, n in (("movies", 1000), ("tweets", 600)):
        ds = datasets.load(f"sentiment-{name}")
        ds = ds.subset(stratified_sample(ds.labels, n, seed=0), name=f"{name}[{n}]")
        out[name] = (extract_features(minilm, ds, precision="fp32", progress=False).features(),
                     np.asarray(ds.labels))
    return out


def test_movies_to_tweets_adaptation_gains_nothing_reliable_and_coral_hurts(movies_tweets):
    """What is true on this pair, said plainly: the feature-level methods do not reliably beat source-only.

    Measured (fp32 features, 300 held-out tweets): source-only 0.707, DANN 0.713 (+0.007, two tweets), CDAN 0.717
    (+0.010), MMD 0.697, CORAL 0.620, oracle 0.833. At full size (benchmarks/results/adapt.txt) DANN is -0.004 and
    CDAN +0.004: the differences are noise. CORAL's per-domain whitening hurts under this task's label shift
    (68% of tweets are positive, the movie snippets are balanced)."""
    (Xs, ys), (Xt, yt) = movies_tweets["movies"], movies_tweets["tweets"]
    acc = _accuracies(Xs, ys, Xt, yt, ["negative", "positive"], ["source-only", "dann", "cdan", "coral"])
    base = acc["source-only"]
    assert acc["oracle"] > base + 0.08  # a real gap that adaptation does not close
    for m in ("dann", "cdan"):  # within noise of source-only (3% of 300 tweets), not a gain worth claiming
        assert abs(acc[m] - base) < 0.03, (m, acc[m], base)
        assert acc[m] < acc["oracle"] - 0.08
    assert acc["coral"] < base - 0.05
