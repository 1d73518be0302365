"""`transferkit export MODEL --format onnx [--quantize int8]`: the network + head as one ONNX graph that
onnxruntime runs alone, with its preprocessing beside it, checked against PyTorch on real items.

The folder written: model.onnx (fp32; model.int8.onnx with --quantize int8: dynamic int8 weights), labels.json,
preprocessing.json (image: size, resize, mean, std; text: tokenizer limits) with tokenizer.json for text models,
export.json (what was checked and measured), and README.md with the inference snippet.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.export.networks import ExportError, model_network
from transferkit.io import atomic_write, write_json

FORMATS = ("onnx",)
QUANTIZE = (None, "int8")
OPSET = 17
CHECK_ITEMS = 256  # real items compared against PyTorch (at most)


def _sample_items(modality: str) -> list:
    if modality == "text":
        return ["a short example sentence", "another, somewhat longer example sentence to pad the batch"]
    return [np.zeros((40, 40, 3), np.uint8), np.full((48, 32, 3), 200, np.uint8)]


def _preprocessing(backbone: Any, out: Path) -> dict:
    """preprocessing.json's content (and, for text, tokenizer.json written beside it)."""
    desc = json.loads(json.dumps(backbone.preprocessing))
    if desc.get("kind") == "image":  # PIL's name of the resampling filter, for the snippet
        desc["resample"] = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST"}[desc["interpolation"]]
    if desc.get("kind") == "text":
        tok = backbone.collate.tokenizer
        tok.save_pretrained(str(out / ".tokenizer"))
        src = out / ".tokenizer" / "tokenizer.json"
        if not src.exists():
            raise ExportError(f"{backbone.spec}'s tokenizer has no fast (tokenizer.json) form: it cannot run "
                              "without transformers")
        src.replace(out / "tokenizer.json")
        import shutil

        shutil.rmtree(out / ".tokenizer", ignore_errors=True)
        desc.update(pad_id=int(tok.pad_token_id or 0), pad_token=str(tok.pad_token),
                    inputs=list(backbone.collate(["x"]).keys()))
    return desc


def export_onnx(model_path: str | Path, out: str | Path, *, quantize: str | None = None, data: Any = None,
                trust_pickle: bool = False, trust_remote_code: bool = False, log: Any = lambda m: None) -> dict:
    """Export the model folder at `model_path` to ONNX in `out`; returns (and writes as export.json) what was
    checked: the largest probability (or value) difference against PyTorch on up to 256 real items, and with
    labelled items the accuracy of PyTorch, ONNX fp32 and (with quantize="int8") ONNX int8.

    data: a Dataset of real items to check on (default: the model's own test split, when its training data can
    be read again and still has the recorded fingerprint)."""
    import onnxruntime as ort
    import torch

    from transferkit.model import load_model

    if quantize not in QUANTIZE:
        raise ExportError(f"--quantize {quantize!r}: use int8, or leave it out")
    model_path, out = Path(model_path), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out {out} is {'a file' if not out.is_dir() else 'not empty'}: give a new folder for "
                          "the export")
    loaded = load_model(model_path, device="cpu", precision="fp32", trust_pickle=trust_pickle,
                        trust_remote_code=trust_remote_code)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _export(loaded, model_path, out, quantize, data, log, ort, torch, trust_pickle)
    except BaseException:
        if created:  # a failed export leaves nothing behind, so the same command can run again
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise


def _export(loaded: Any, model_path: Path, out: Path, quantize: str | None, data: Any, log: Any, ort: Any,
            torch: Any, trust_pickle: bool = False) -> dict:
    probe = loaded.predictor
    backbone = getattr(probe, "backbone", None) or getattr(getattr(probe, "run", None), "backbone", None)
    if backbone is None:
        if loaded.info.kind in ("baseline", "hybrid"):
            raise ExportError(f"a {loaded.info.kind} model (TF-IDF or pixels + a linear model) has no network to "
                              "export: use it with `transferkit predict`, `transferkit serve` or transferkit.load")
        if loaded.info.kind == "ensemble":
            raise ExportError("an ensemble model averages several models' predictions and has no single network to "
                              "export: export its members (members/NAME in the folder), or use it with "
                              "`transferkit predict`, `transferkit serve` or transferkit.load")
        raise ExportError(f"this {loaded.info.kind} model has no network to export")
    sample = backbone.collate(_sample_items(loaded.modality))
    names = list(sample)
    net, _ = model_network(loaded, names)
    onnx_file = out / "model.onnx"
    dynamic = {n: ({0: "batch", 1: "tokens"} if n != "pixel_values" else {0: "batch"}) for n in names}
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, tuple(sample[n] for n in names), str(onnx_file), input_names=names,
                              output_names=["outputs"], dynamic_axes={**dynamic, "outputs": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
    except Exception as e:  # noqa: BLE001 — the exporter raises many kinds; all mean "this network does not trace"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ExportError(f"{loaded.info.backbone.get('spec')} could not be traced to ONNX ({type(e).__name__}: "
                          f"{first})") from e
    log(f"exported {onnx_file} in {time.perf_counter() - t0:.1f} s")
    files = {"fp32": onnx_file}
    quantized = None
    if quantize == "int8":
        files["int8"] = quantize_int8(onnx_file, out / "model.int8.onnx")
        quantized = _quantized_share(onnx_file)
    pre = _preprocessing(backbone, out)
    write_json(out / "preprocessing.json", pre)
    write_json(out / "labels.json", {"task": loaded.task, "class_names": loaded.class_names,
                                     "outputs": "probabilities" if loaded.has_proba else
                                     ("values" if loaded.task == "regression" else "scores")})
    report: dict[str, Any] = {"model": str(model_path), "kind": loaded.info.kind, "inputs": names,
                              "files": {k: v.name for k, v in files.items()}, "opset": OPSET,
                              "model_precision": loaded.info.precision}
    if quantized is not None:
        report["int8_weight_share"] = quantized
    items, labels, where = _check_items(loaded, data)
    if items:
        report.update(_compare(loaded, files, items, labels, backbone, names, ort))
        report["checked_on"] = where
        if loaded.info.precision != "fp32":  # the graph is fp32; the folder predicts (and serves) in its own precision
            from transferkit.model import load_model

            served = load_model(model_path, device="cpu", trust_pickle=trust_pickle).outputs(items)
            fp32 = _run_onnx(ort.InferenceSession(str(files["fp32"]), providers=["CPUExecutionProvider"]),
                             backbone, names, items)
            report[f"max_{'prob' if loaded.has_proba else 'output'}_diff_vs_served_{loaded.info.precision}"] = \
                float(np.abs(fp32 - served).max())
    else:
        report["checked_on"] = where or "nothing: give --data to check the export on real items"
    write_json(out / "export.json", report)
    atomic_write(out / "README.md", lambda p: p.write_text(readme(loaded, pre, report), encoding="utf-8"))
    return report


#: what dynamic int8 quantises: linear layers. Convolutions stay fp32: dynamic ConvInteger measured 3.9× slower
#: than fp32 and lost 62 accuracy points on EfficientNet-Lite0 (benchmarks/export_speed.py); they need static
#: quantisation with calibration data, which this export does not do
INT8_OPS = ("MatMul", "Gemm", "Attention")


def quantize_int8(src: Path, dest: Path) -> Path:
    """Dynamic int8 quantisation of the backbone's linear layers (INT8_OPS); the head (a few small matrices, and
    for kernel or kNN heads stored items whose distances int8 would blur) stays fp32."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the quantiser rewrites a Gemm as a MatMul named NAME_MatMul before it quantises: exclude both names
    head = [name for n in onnx.load(str(src)).graph.node if n.name.startswith("/head/")
            for name in (n.name, f"{n.name}_MatMul")]
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's advice to pre-process is noise here
    try:
        quantize_dynamic(str(src), str(dest), weight_type=QuantType.QInt8, nodes_to_exclude=head,
                         op_types_to_quantize=list(INT8_OPS))
    finally:
        logging.getLogger().setLevel(level)
    return dest


def _quantized_share(onnx_file: Path) -> float:
    """The share of the graph's weights that int8 quantisation covers (those read by INT8_OPS, outside the head)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_file))
    sizes = {t.name: numpy_helper.to_array(t).size for t in model.graph.initializer}
    covered = {i for n in model.graph.node if n.op_type in INT8_OPS and not n.name.startswith("/head/")
               for i in n.input if i in sizes}
    total = sum(sizes.values())
    return round(sum(sizes[i] for i in covered) / total, 4) if total else 0.0


def _check_items(loaded: Any, data: Any) -> tuple[list, np.ndarray | None, str]:
    """Real items to check on: the model's own test split (of `data` when they are its training data, else read
    again from where model.json says they are), or all of `data` when they are other data."""
    from transferkit.model.data import own_test_part, own_test_split

    if data is None:
        data, where = own_test_split(loaded.info)
        if data is None:
            return [], None, where
    elif data.fingerprint == loaded.info.data.get("fingerprint") and own_test_part(loaded.info, data) is not None:
        data = own_test_part(loaded.info, data)
        where = f"its own test split ({len(data)} items)"
    else:
        where = f"{data.name} ({len(data)} items)"
    idx = np.linspace(0, len(data) - 1, min(CHECK_ITEMS, len(data))).round().astype(int) if len(data) else []
    sub = data.subset(np.unique(idx)) if len(data) else data
    labels = None
    if sub.labels is not None and loaded.info.is_classifier and sub.class_names:
        known = {c: i for i, c in enumerate(loaded.class_names)}
        names = [sub.class_names[int(v)] for v in sub.labels]
        if all(n in known for n in names):
            labels = np.array([known[n] for n in names])
    return list(sub.items), labels, where


def _run_onnx(sess: Any, backbone: Any, names: list[str], items: list, batch: int = 32) -> np.ndarray:
    outs = []
    for s in range(0, len(items), batch):
        enc = backbone.collate(items[s: s + batch])
        outs.append(sess.run(None, {n: enc[n].numpy() for n in names})[0])
    return np.concatenate(outs)


def _compare(loaded: Any, files: dict, items: list, labels: np.ndarray | None, backbone: Any, names: list[str],
             ort: Any) -> dict:
    ref = loaded.outputs(items)  # PyTorch in fp32, as the ONNX graph computes
    res: dict[str, Any] = {"n_checked": len(items)}
    key = "max_prob_diff" if loaded.has_proba else "max_output_diff"
    if labels is not None:
        res["accuracy_torch"] = float((ref.argmax(1) == labels).mean())
    for name, file in files.items():
        sess = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        got = _run_onnx(sess, backbone, names, items)
        res[f"{key}_{name}"] = float(np.abs(got - ref).max())
        if loaded.info.is_classifier:
            res[f"agreement_{name}"] = float((got.argmax(1) == ref.argmax(1)).mean())
        if labels is not None:
            res[f"accuracy_{name}"] = float((got.argmax(1) == labels).mean())
    if "accuracy_int8" in res:
        res["accuracy_change_int8"] = res["accuracy_int8"] - res["accuracy_fp32"]
    return res


def readme(loaded: Any, pre: dict, report: dict) -> str:
    """README.md of the export folder: what is in it, the inference snippet, and what was checked."""
    if pre.get("kind") == "text":
        snippet = TEXT_SNIPPET
        needs = "onnxruntime, numpy and the `tokenizers` package (tokenizer.json; no torch, no transformers)"
    else:
        snippet = IMAGE_SNIPPET
        needs = "onnxruntime, numpy and Pillow (no torch)"
    checked = {k: v for k, v in report.items() if k.startswith(("max_", "accuracy", "agreement", "n_checked"))}
    return (f"# ONNX export of a {loaded.info.kind} model\n\nPredicts "
            + (f"one of {len(loaded.class_names)} classes (labels.json)" if loaded.info.is_classifier else "a value")
            + f". Runs with {needs}.\n\n```python\n{snippet}```\n\n"
            "Files: model.onnx (fp32)" + (", model.int8.onnx (int8 weights)" if "int8" in report["files"] else "")
            + ", preprocessing.json, labels.json" + (", tokenizer.json" if pre.get("kind") == "text" else "")
            + ", export.json.\n\nChecked against PyTorch on " + str(report.get("checked_on")) + ": "
            + (", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in checked.items())
               or "not checked") + ".\n")


IMAGE_SNIPPET = '''import json, numpy as np, onnxruntime as ort
from PIL import Image
cfg, labels = json.load(open("EXPORT/preprocessing.json")), json.load(open("EXPORT/labels.json"))["class_names"]
sess = ort.InferenceSession("EXPORT/model.onnx")
def prep(path):  # shorter side to cfg["resize"], centre crop cfg["size"], scale to [0, 1], normalise
    im, n = Image.open(path).convert("RGB"), cfg["size"]; s = cfg["resize"] / min(im.size)
    im = im.resize((max(n, round(im.width * s)), max(n, round(im.height * s))), getattr(Image, cfg["resample"]))
    l, t = (im.width - n) // 2, (im.height - n) // 2
    x = (np.asarray(im.crop((l, t, l + n, t + n)), np.float32) / 255 - cfg["mean"]) / cfg["std"]
    return x.transpose(2, 0, 1).astype(np.float32)
probs = sess.run(None, {"pixel_values": np.stack([prep(p) for p in ["a.jpg", "b.png"]])})[0]
print([labels[i] for i in probs.argmax(1)])
'''

TEXT_SNIPPET = '''import json, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
cfg, labels = json.load(open("EXPORT/preprocessing.json")), json.load(open("EXPORT/labels.json"))["class_names"]
tok = Tokenizer.from_file("EXPORT/tokenizer.json")
tok.enable_truncation(cfg["max_length"]); tok.enable_padding(pad_id=cfg["pad_id"], pad_token=cfg["pad_token"])
sess = ort.InferenceSession("EXPORT/model.onnx")
enc = tok.encode_batch(["a wonderful film", "the service was terrible"])
feed = {"input_ids": [e.ids for e in enc], "attention_mask": [e.attention_mask for e in enc],
        "token_type_ids": [e.type_ids for e in enc]}
probs = sess.run(None, {k: np.array(v, np.int64) for k, v in feed.items() if k in cfg["inputs"]})[0]
print([labels[i] for i in probs.argmax(1)])
'''
