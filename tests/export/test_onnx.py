"""ONNX export of every route: onnxruntime alone gives PyTorch's answers, the README's snippet runs as written,
and int8 reports what quantisation costs."""

import re

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.export import ExportError, export_onnx
from transferkit.model import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def heads(models, tmp_path_factory):
    """A probe model folder for every head family, on the same tweet features."""
    feats = models["probe"].parent / "feats"
    out = {}
    for head in ("logreg", "svm", "rbf-svm", "ridge", "knn"):
        folder = tmp_path_factory.mktemp("heads") / head
        r = CliRunner().invoke(app, ["probe", str(feats), "--head", head, "--out", str(folder)])
        assert r.exit_code == 0, r.output
        out[head] = folder
    return out


def _onnx_outputs(model_folder, onnx_folder, items):
    """onnxruntime's outputs for raw items, preprocessed by the model's own backbone collate."""
    loaded = load_model(model_folder, precision="fp32")
    backbone = getattr(loaded.predictor, "backbone", None) or loaded.predictor.run.backbone
    sess = ort.InferenceSession(str(onnx_folder / "model.onnx"))
    enc = backbone.collate(items)
    return sess.run(None, {i.name: enc[i.name].numpy() for i in sess.get_inputs()})[0]


@pytest.mark.parametrize("route", ["probe", "finetune", "adapt-features", "source-free"])
def test_every_route_exports_and_onnxruntime_gives_its_answers(route, models, items_for, tmp_path):
    from transferkit.data import load_data

    items, source = items_for(route)
    # models with a recorded test split are checked on it; the adapted ones on the target images they are for
    data = load_data(str(source)) if route in ("adapt-features", "source-free") else None
    report = export_onnx(models[route], tmp_path / "onnx", data=data)
    assert {p.name for p in (tmp_path / "onnx").iterdir()} >= {"model.onnx", "preprocessing.json", "labels.json",
                                                                "export.json", "README.md"}
    # fp32 against fp32, on other kernels: measured up to 1.1e-3 (the AdaBN-adapted net), 6e-5 for the others
    assert report["max_prob_diff_fp32"] < 5e-3 and report["agreement_fp32"] == 1.0, report
    got = _onnx_outputs(models[route], tmp_path / "onnx", items)
    np.testing.assert_allclose(got, load_model(models[route]).outputs(items), atol=5e-3)
    assert (got.argmax(1) == load_model(models[route]).predict(items)).all()


@pytest.mark.parametrize("head", ["logreg", "svm", "rbf-svm", "ridge", "knn"])
def test_every_head_family_exports_exactly(head, heads, items_for, tmp_path):
    texts, _ = items_for("probe")
    export_onnx(heads[head], tmp_path / "onnx")
    loaded = load_model(heads[head])
    got = _onnx_outputs(heads[head], tmp_path / "onnx", texts)
    np.testing.assert_allclose(got, loaded.outputs(texts), atol=1e-4)
    assert (got.argmax(1) == loaded.predict(texts)).all()


def _snippet(folder):
    code = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)
    return code.replace("EXPORT", str(folder))


def test_the_readme_snippet_runs_as_written_for_text(models, tmp_path):
    export_onnx(models["probe"], tmp_path / "onnx")
    code = _snippet(tmp_path / "onnx")
    assert len(code.strip().splitlines()) <= 12
    env: dict = {}
    exec(compile(code, "README.md", "exec"), env)  # noqa: S102 — the documented snippet, as a user pastes it
    texts = ["a wonderful film", "the service was terrible"]
    np.testing.assert_allclose(env["probs"], load_model(models["probe"]).outputs(texts), atol=1e-4)


def test_the_readme_snippet_runs_as_written_for_images(models, items_for, tmp_path):
    export_onnx(models["finetune"], tmp_path / "onnx")
    images, _ = items_for("finetune")
    code = _snippet(tmp_path / "onnx").replace('["a.jpg", "b.png"]', repr([str(p) for p in images[:6]]))
    assert len(code.strip().splitlines()) <= 12
    env: dict = {}
    exec(compile(code, "README.md", "exec"), env)  # noqa: S102
    np.testing.assert_allclose(env["probs"], load_model(models["finetune"]).outputs(images[:6]), atol=1e-4)


def test_int8_reports_its_accuracy_change_on_the_models_own_test_split(models, tmp_path):
    r = CliRunner().invoke(app, ["export", str(models["probe"]), "--quantize", "int8", "--out", str(tmp_path / "q")])
    assert r.exit_code == 0, r.output
    import json

    report = json.loads((tmp_path / "q" / "export.json").read_text())
    assert report["checked_on"].startswith("its own test split")
    assert report["accuracy_fp32"] == pytest.approx(load_model(models["probe"]).info.metrics["test"]["accuracy"])
    assert report["accuracy_change_int8"] == pytest.approx(report["accuracy_int8"] - report["accuracy_fp32"])
    # int8 covers the linear layers, not the token embeddings: measured 0.47 of MiniLM's weights, 0.65 of the file
    assert 0.3 < report["int8_weight_share"] < 0.9
    assert (tmp_path / "q" / "model.int8.onnx").stat().st_size < 0.8 * (tmp_path / "q" / "model.onnx").stat().st_size


def test_a_fine_tuned_head_stays_fp32_in_the_int8_graph(models, tmp_path):
    import onnx

    export_onnx(models["finetune"], tmp_path / "q", quantize="int8")
    nodes = onnx.load(str(tmp_path / "q" / "model.int8.onnx")).graph.node
    head = [n for n in nodes if n.name.startswith("/head/")]
    assert head and not [n for n in head if "Integer" in n.op_type or "Quantize" in n.op_type]


def test_export_refuses_a_used_folder_and_unknown_options(models, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        export_onnx(models["probe"], tmp_path / "full")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export_onnx(models["probe"], tmp_path / "file")
    with pytest.raises(ExportError, match="int4"):
        export_onnx(models["probe"], tmp_path / "a", quantize="int4")
    r = CliRunner().invoke(app, ["export", str(models["probe"]), "--format", "tflite", "--out", str(tmp_path / "b")])
    assert "--format 'tflite'" in str(r.exception)


@pytest.mark.parametrize("route", ["baseline", "hybrid", "ensemble"])
def test_models_without_one_network_are_refused_in_one_line(route, models, tmp_path):
    with pytest.raises(ExportError, match="no (single )?network to export") as e:
        export_onnx(models[route], tmp_path / "onnx")
    assert "\n" not in str(e.value) and "transferkit predict" in str(e.value)
    assert not (tmp_path / "onnx").exists()  # a refused export leaves nothing behind
    assert "transferkit export" not in (models[route] / "README.md").read_text()
