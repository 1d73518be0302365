"""Every route hands over a model folder that predicts from the folder alone — through `load_model`,
`transferkit.load` and `transferkit predict` — with the same answers, and the answers it gave when it was made."""

import csv
import json

import numpy as np
import pytest
from route_models import reads_text
from typer.testing import CliRunner

import transferkit
from transferkit.cli import app
from transferkit.model import load_model, read_info
from transferkit.model.data import own_test_split

ROUTES = {"probe": "probe", "probe-svm": "probe", "finetune": "finetune", "adapt-features": "adapt-features",
          "source-free": "source-free", "baseline": "baseline", "baseline-pixels": "baseline", "hybrid": "hybrid",
          "ensemble": "ensemble"}


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_route_writes_a_model_folder_with_its_card(route, models):
    folder = models[route]
    names = {p.name for p in folder.iterdir()}
    assert {"model.json", "model.safetensors", "README.md"} <= names
    assert not [p for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib")]
    info = read_info(folder)
    assert info.kind == ROUTES[route] and info.precision == "fp32" and info.task == "classification"
    if info.kind == "baseline":  # no pretrained network: the featurizer and the linear model are the weights
        assert info.backbone is None and info.training["baseline"] == ("tfidf" if route == "baseline" else "pixels")
    elif info.kind == "hybrid":  # TF-IDF beside MiniLM's embeddings: the encoder by reference, like a probe
        assert info.backbone["spec"] == "st:all-MiniLM-L6-v2" and info.training["baseline"] == "hybrid"
    elif info.kind == "ensemble":  # its members are model folders of their own, inside it
        assert info.backbone is None and all((folder / m["folder"] / "model.json").exists()
                                             for m in info.training["members"])
    else:
        assert info.backbone["spec"] in ("st:all-MiniLM-L6-v2", "effnet:lite0") and info.backbone["weights"]
    card = (folder / "README.md").read_text()
    assert f"# {info.kind} model" in card and "transferkit predict" in card and "transferkit.load" in card
    for part, scores in info.metrics.items():  # every measured score is in the card
        assert f"| {part} |" in card and all(f"{v:.4f}" in card for v in scores.values() if isinstance(v, float))


@pytest.mark.parametrize("route", list(ROUTES))
def test_the_same_answers_through_load_transferkit_load_and_the_cli(route, models, items_for, tmp_path):
    items, source = items_for(route)
    folder = models[route]
    loaded = load_model(folder)
    ref = loaded.outputs(items)
    assert ref.shape == (len(items), len(loaded.class_names)) and loaded.has_proba
    np.testing.assert_allclose(ref.sum(1), 1.0, atol=1e-6)
    est = transferkit.load(folder)
    np.testing.assert_allclose(est.predict_proba(items if reads_text(route) else [str(i) for i in items]), ref,
                               atol=1e-6)
    assert list(est.predict(items)) == list(est.classes_[ref.argmax(1)])
    r = CliRunner().invoke(app, ["predict", str(folder), "--data", str(source), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    rows = {row["id"]: row for row in csv.DictReader(open(tmp_path / "p.csv"))}
    keys = [str(i + 1) for i in range(len(items))] if reads_text(route) else [str(p) for p in items]
    got = np.array([[float(rows[k][f"p_{c}"]) for c in loaded.class_names] for k in keys])
    np.testing.assert_allclose(got, ref, atol=2e-6)  # the CSV keeps 6 decimals
    assert [rows[k]["prediction"] for k in keys] == [loaded.class_names[i] for i in ref.argmax(1)]


@pytest.mark.parametrize("route", ["probe", "probe-svm", "finetune", "baseline", "baseline-pixels", "hybrid",
                                   "ensemble"])
def test_after_loading_it_scores_its_test_split_as_when_it_was_made(route, models):
    """The test accuracy recorded when the model was made is what the folder alone gives on the same items (its
    test split, read again from the data model.json names)."""
    loaded = load_model(models[route])
    test, where = own_test_split(loaded.info)
    assert test is not None, where
    acc = float((loaded.predict(list(test.items)) == test.labels).mean())
    assert acc == pytest.approx(loaded.info.metrics["test"]["accuracy"], abs=1e-12)


def test_a_margin_head_gives_calibrated_probabilities_with_its_own_predictions(models):
    loaded = load_model(models["probe-svm"])
    assert loaded.info.training["head"] == "svm" and loaded.info.training["temperature"] > 0
    from transferkit.heads.probe_model import load_head_of

    head = load_head_of(models["probe-svm"], loaded.info)
    texts = ["what a lovely day", "worst service ever", "meh", "I love this so much"]
    feats = loaded.embed(texts)
    assert list(loaded.predict(texts)) == list(head.predict(feats))  # temperature never changes the arg-max


def test_adapted_model_predicts_from_raw_items_what_it_did_from_features(models, digit_folders):
    """An adapt-features folder rebuilds its backbone and gives, from raw images, the probabilities the adapted
    classifier gave on the features it was fitted on."""
    from transferkit.adapt import load_run
    from transferkit.backbones import load_backbone
    from transferkit.data import load_data
    from transferkit.features import extract_features

    run = load_run(models["adapt-features"])
    target = load_data(str(digit_folders / "digits"))
    X = extract_features(load_backbone(run.backbone_spec, **run.backbone_options), target, precision="fp32",
                         progress=False).features()
    np.testing.assert_allclose(load_model(models["adapt-features"]).outputs(list(target.items)),
                               run.predict_proba(X), atol=1e-5)


def test_predict_gives_every_bad_item_a_row_that_says_why(models, tmp_path):
    import pandas as pd

    table = tmp_path / "mixed.csv"
    pd.DataFrame({"text": ["a fine day", "", "awful", "   ", "great"]}).to_csv(table, index=False)
    r = CliRunner().invoke(app, ["predict", str(models["probe"]), "--data", str(table), "--out",
                                 str(tmp_path / "p.csv")])
    assert r.exception is not None and "row 2" in str(r.exception)  # fail (the default) names the first bad row
    r = CliRunner().invoke(app, ["predict", str(models["probe"]), "--data", str(table), "--on-bad-input", "skip",
                                 "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert sorted(int(row["id"]) for row in rows) == [1, 2, 3, 4, 5]  # no silent gap
    bad = {int(row["id"]): row for row in rows if row["error"]}
    assert sorted(bad) == [2, 4] and all("empty" in row["error"] and row["prediction"] == "" for row in bad.values())
    assert "2 item(s) could not be read" in r.output


def test_an_unreadable_image_gets_its_row_when_skipping(models, digit_folders, tmp_path):
    import shutil

    folder = tmp_path / "imgs"
    shutil.copytree(digit_folders / "digits" / "3", folder / "3")
    (folder / "3" / "zzz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")  # a header that lies
    r = CliRunner().invoke(app, ["predict", str(models["finetune"]), "--data", str(folder), "--on-bad-input",
                                 "skip", "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    rows = {row["id"]: row for row in csv.DictReader(open(tmp_path / "p.csv"))}
    broken = next(v for k, v in rows.items() if k.endswith("zzz-broken.png"))
    assert broken["prediction"] == "" and broken["error"]
    assert sum(1 for v in rows.values() if v["prediction"]) == 10


def test_model_folders_of_earlier_versions_still_load(models, tmp_path):
    """A fine-tuning run folder written before model.json existed (run.json + model.safetensors) predicts as
    before: the facts are read from run.json."""
    import shutil

    old = tmp_path / "old-run"
    shutil.copytree(models["finetune"], old)
    (old / "model.json").unlink()
    (old / "README.md").unlink()
    info = read_info(old)
    assert info.kind == "finetune" and info.backbone["build"] == {"image_size": 32}
    new, again = load_model(models["finetune"]), load_model(old)
    imgs = [np.full((28, 28), v, np.uint8) for v in (0, 128, 255)]
    np.testing.assert_array_equal(new.outputs(imgs), again.outputs(imgs))
    doc = json.loads((models["finetune"] / "model.json").read_text())
    assert doc["format"] == "transferkit.model" and doc["format_version"] == 1


def test_an_adaptation_run_of_an_earlier_version_still_loads(models, items_for, tmp_path):
    """run.json + model.safetensors as the previous version wrote them (no model.json): same predictions."""
    import shutil

    new = models["adapt-features"]
    old = tmp_path / "old-adapt"
    shutil.copytree(new, old)
    doc = json.loads((old / "model.json").read_text())
    b = doc["backbone"]
    (old / "run.json").write_text(json.dumps({
        "kind": "adapt-features", "format_version": 1, "class_names": doc["class_names"],
        "backbone": {"spec": b["spec"], "pooling": b["pooling"], "pretrained": True, "image_size": 32,
                     "feature_dim": b["feature_dim"], "weights": b["weights"], "preprocessing": b["preprocessing"]},
        "method": "coral", "hyperparameters": {"lam": 1.0, "C": 1.0}, "predictor": "linear",
        "metrics": {"source_val_accuracy": 0.5, "target_accuracy": 0.25, "dev": 1.0}}))
    (old / "model.json").unlink()
    (old / "README.md").unlink()
    info = read_info(old)
    assert info.kind == "adapt-features" and info.backbone["build"]["image_size"] == 32  # recovered from the record
    assert info.metrics == {"source_val": {"accuracy": 0.5}, "target": {"accuracy": 0.25}}
    images, _ = items_for("adapt-features")
    np.testing.assert_array_equal(load_model(old).outputs(images), load_model(new).outputs(images))


def test_a_probe_head_saved_by_an_earlier_version_still_loads(models, items_for, tmp_path):
    """head.json + arrays.safetensors + probe.json naming its (still existing) feature folder."""
    from transferkit.heads import save_head
    from transferkit.heads.probe import probe_features

    feats = models["probe"].parent / "feats"
    report = probe_features(feats, head="logreg")
    from transferkit.heads.probe_model import load_head_of

    head = load_head_of(models["probe"], read_info(models["probe"]))
    save_head(head, tmp_path / "old-head")
    (tmp_path / "old-head" / "probe.json").write_text(json.dumps({**report, "features": str(feats)}))
    info = read_info(tmp_path / "old-head")
    assert info.kind == "probe" and info.backbone["spec"] == "st:all-MiniLM-L6-v2"
    texts, _ = items_for("probe")
    np.testing.assert_array_equal(load_model(tmp_path / "old-head").outputs(texts),
                                  load_model(models["probe"]).outputs(texts))
