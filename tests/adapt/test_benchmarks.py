"""On real MNIST → UCI digits features (EfficientNet-Lite0 at 64 px, 600 items a side, the session's shared
features), CORAL beats source-only logistic regression on the held-out target half by a measured margin.

Measured with seed 0 (2026-11-29): source-only 0.170, CORAL 0.307, oracle ≈ 0.9. DANN (150/300 steps) 0.123/0.127
and CDAN (150 steps) 0.140 did NOT beat source-only at this size, so they are not asserted here; the full-size
numbers are in benchmarks/results/adapt.txt."""

import pytest

from transferkit.adapt import adapt_features
from transferkit.adapt.align import oracle
from transferkit.adapt.benchmark import target_halves

pytestmark = pytest.mark.slow
CLASSES = [str(i) for i in range(10)]


def test_coral_beats_source_only_on_mnist_to_digits(digit_features):
    (Xs, ys), (Xt, yt) = digit_features["mnist"], digit_features["digits"]
    a, b = target_halves(yt, 0)

    def acc(method):
        return adapt_features(Xs, ys, Xt[a], CLASSES, method=method, seed=0, Xt_eval=Xt[b],
                              yt_eval=yt[b]).metrics["target_accuracy"]

    base, coral = acc("source-only"), acc("coral")
    ceiling = (oracle(Xt[a], yt[a], CLASSES).predict(Xt[b]) == yt[b]).mean()
    assert ceiling > 0.8  # the features separate the digits in-domain: the gap is the shift
    assert 0.12 < base < ceiling - 0.4  # above chance (std floor keeps near-dead units from swamping it) yet far off
    assert coral > base + 0.08  # measured +0.137
