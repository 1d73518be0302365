"""The model card: a README.md written from model.json's facts (what it predicts, how it was made, what it
measured and cost, how to use it, its limits), so the folder explains itself to whoever receives it."""

from __future__ import annotations

from transferkit.model.info import ModelInfo

KIND_TEXT = {
    "probe": "a frozen pretrained backbone whose features feed a classical head fitted on them",
    "baseline": "a classical model on the raw input (no pretrained network): the strong simple baseline",
    "hybrid": "TF-IDF features and a frozen pretrained encoder's embeddings side by side in one linear model",
    "finetune": "a pretrained backbone fine-tuned, with a new linear head, on the task",
    "adapt-features": "a classifier adapted from a labelled source domain to an unlabelled target domain on "
                      "frozen backbone features",
    "adapt-e2e": "a backbone fine-tuned on a labelled source domain with a domain-alignment loss on an unlabelled "
                 "target domain",
    "source-free": "a fine-tuned model adapted to an unlabelled target domain without the source data",
    "ensemble": "a weighted average of several models' predictions, the weights chosen on validation data",
}


#: kinds without one network to trace (a sparse linear model on n-grams, an average of models)
NOT_EXPORTED = ("baseline", "hybrid", "ensemble")


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def render_card(info: ModelInfo, folder_name: str = "MODEL") -> str:
    """Markdown for README.md."""
    b = info.backbone or {}
    lines = [f"# {info.kind} model: {info.task} of {info.modality} items", ""]
    if info.is_classifier:
        shown = ", ".join(f"`{c}`" for c in info.class_names[:20]) + (" …" if len(info.class_names) > 20 else "")
        lines += [f"Predicts one of {len(info.class_names)} classes: {shown}.", ""]
    else:
        lines += ["Predicts a real value.", ""]
    lines += ["## How it was made", "", f"- Route: {info.kind}, {KIND_TEXT.get(info.kind, info.kind)}."]
    if b:
        build = ", ".join(f"{k}={v}" for k, v in (b.get("build") or {}).items())
        lines.append(f"- Backbone: `{b.get('spec')}`" + (f" ({build})" if build else "")
                     + f", {b.get('feature_dim')}-d features, weights digest `{str(b.get('weights'))[:16]}`.")
    lines.append(f"- Precision: {info.precision} (prediction uses the same).")
    for k, v in info.training.items():
        if isinstance(v, (str, int, float, bool)):
            lines.append(f"- {k.replace('_', ' ')}: {v}")
    d = info.data
    if d:
        split = d.get("split") or {}
        lines.append(f"- Data: {d.get('name', '?')} ({_fmt(d.get('n', '?'))} items"
                     + (f"; split train/val/test {split.get('train')}/{split.get('val')}/{split.get('test')}, "
                        f"seed {split.get('seed')}" if split else "") + f"), fingerprint `{d.get('fingerprint')}`.")
    lines += ["", "## Measured", ""]
    if info.metrics:
        names = sorted({k for m in info.metrics.values() if isinstance(m, dict) for k in m})
        lines += ["| split | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for part, m in info.metrics.items():
            if isinstance(m, dict):
                lines.append(f"| {part} | " + " | ".join(_fmt(m[k]) if k in m else "" for k in names) + " |")
        lines.append("")
        lines.append("Test scores are on items held out from training and from every choice made in training.")
    else:
        lines.append("No held-out scores were recorded.")
    if info.cost:
        lines += ["", "Cost: " + ", ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in info.cost.items()
                                          if v is not None) + "."]
    lines += ["", "## Use", "", "```bash",
              f"transferkit predict {folder_name} --data ITEMS --out predictions.csv",
              f"transferkit serve {folder_name} --port 8000",
              *([f"transferkit export {folder_name} --format onnx --out {folder_name}-onnx"]
                if info.kind not in NOT_EXPORTED else []),
              "```", "", "```python",
              "import transferkit", "", f'model = transferkit.load("{folder_name}")',
              "model.predict(items)        # " + ("class names" if info.is_classifier else "values"),
              *(["model.predict_proba(items)  # one column per class"] if info.is_classifier else []),
              "```", "", "## Limits", ""]
    lines.append(f"- It knows only what its training data showed: {info.data.get('name', 'the training data')}"
                 + (" with the classes above; an item of another class gets one of these." if info.is_classifier
                    else "."))
    lines.append("- The scores above hold for items like the training data; under a shift of distribution "
                 "expect lower (`transferkit shift` measures one).")
    if b:
        lines.append(f"- Rebuilding it needs the same backbone weights (`{b.get('spec')}`); other weights are "
                     "refused.")
    return "\n".join(lines) + "\n"
