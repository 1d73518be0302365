"""save_head/load_head: safetensors + JSON only, never pickle, and identical predictions after loading."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from transferkit.errors import HeadError
from transferkit.heads import FittedHead, fit_head, load_head, save_head

CLASSIFIERS = ("logreg", "svm", "rbf-svm", "ridge", "knn")


@pytest.fixture
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any use of pickle during the test fail loudly."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle must not be used to save or load heads")

    for name in ("dump", "dumps", "load", "loads", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)


def round_trip(head: FittedHead, folder: Path, X: np.ndarray) -> FittedHead:
    save_head(head, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["arrays.safetensors", "head.json"]
    assert all(p.suffix in {".json", ".safetensors"} for p in folder.rglob("*"))
    loaded = load_head(folder)
    # bit-exact by construction: the fitted arrays have the dtype, shape and C layout the loaded ones have, so
    # both take the same BLAS path (a transposed, Fortran-ordered coef took another one on AVX512 hosts)
    fitted, back = head.predictor.state()[0], loaded.predictor.state()[0]
    assert fitted.keys() == back.keys()
    for k, v in fitted.items():
        v, w = np.asarray(v), np.asarray(back[k])
        assert v.dtype == w.dtype and v.shape == w.shape, k
        if v.dtype.kind in "biuf":
            assert v.flags.c_contiguous and w.flags.c_contiguous, k
    np.testing.assert_array_equal(loaded.predict(X), head.predict(X))
    assert loaded.has_proba == head.has_proba
    if head.has_proba:
        np.testing.assert_array_equal(loaded.predict_proba(X), head.predict_proba(X))
    if hasattr(head.predictor, "decision_function"):
        np.testing.assert_array_equal(loaded.decision_function(X), head.decision_function(X))
    if head.task == "classification":
        np.testing.assert_array_equal(loaded.classes_, head.classes_)
    assert loaded.summary() == json.loads(json.dumps(head.summary()))
    return loaded


@pytest.mark.parametrize("name", [*CLASSIFIERS, "auto"])
def test_round_trip_multiclass(name: str, digit_heads, digits, tmp_path: Path, no_pickle: None) -> None:
    loaded = round_trip(digit_heads[name], tmp_path / name, digits[4])
    assert loaded.name == digit_heads[name].name and loaded.params == digit_heads[name].params


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_round_trip_binary(name: str, binary_heads, digits_binary, tmp_path: Path, no_pickle: None) -> None:
    round_trip(binary_heads[name], tmp_path / name, digits_binary[4])


@pytest.mark.parametrize("name", ["ridge", "knn", "auto"])
def test_round_trip_regression(name: str, regression_heads, diabetes, tmp_path: Path, no_pickle: None) -> None:
    round_trip(regression_heads[name], tmp_path / name, diabetes[4])


def test_loaded_logreg_is_a_fitted_probe(digit_heads, digits, tmp_path: Path) -> None:
    save_head(digit_heads["logreg"], tmp_path)
    probe = load_head(tmp_path).predictor
    assert probe.C_ == digit_heads["logreg"].params["C"]
    assert probe.score(digits[4], digits[5]) == digit_heads["logreg"].predictor.score(digits[4], digits[5])
    assert probe.get_params() == digit_heads["logreg"].predictor.get_params()


@pytest.mark.parametrize("name", ["logreg", "knn", "rbf-svm"])
def test_string_classes_round_trip(name: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    X = rng.normal(size=(60, 4)) + 3 * y[:, None]
    labels = np.array(["ant", "bee", "cat"])[y]
    head = fit_head(name, X[:40], labels[:40], X[40:], labels[40:])
    loaded = round_trip(head, tmp_path, X)
    assert list(loaded.classes_) == ["ant", "bee", "cat"]


def test_load_rejects_bad_folders(tmp_path: Path, digit_heads) -> None:
    with pytest.raises(HeadError, match="is not a saved head"):
        load_head(tmp_path / "missing")
    save_head(digit_heads["ridge"], tmp_path / "ok")
    meta = tmp_path / "ok" / "head.json"
    doc = json.loads(meta.read_text())
    doc["predictor"] = "pickled-sklearn"
    meta.write_text(json.dumps(doc))
    with pytest.raises(HeadError, match="unknown predictor 'pickled-sklearn'"):
        load_head(tmp_path / "ok")
    meta.write_text("not json")
    with pytest.raises(HeadError, match="cannot read saved head"):
        load_head(tmp_path / "ok")
    save_head(digit_heads["ridge"], tmp_path / "ok")
    (tmp_path / "ok" / "arrays.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(HeadError, match="cannot read saved head"):
        load_head(tmp_path / "ok")
    (tmp_path / "file").write_text("x")
    with pytest.raises(HeadError, match="it is a file"):
        save_head(digit_heads["ridge"], tmp_path / "file")
