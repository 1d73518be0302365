"""Export speed: per-item latency (batch 1) and throughput (batch 64) of the same model as torch eager vs
onnxruntime fp32 vs onnxruntime int8, for the bundled MiniLM (text) and EfficientNet-Lite0 (images), with the
accuracy each gives on the model's own test split. Ratios are printed against torch eager fp32.

    python benchmarks/export_speed.py [--threads 2] [--reps 30] [--out benchmarks/results/export_speed.json]

The models are real probe models (frozen backbone + logistic regression) made here from bundled data: 600
tweets (VADER) on all-MiniLM-L6-v2, 600 MNIST digits on EfficientNet-Lite0 at its native 224 px. Timing covers
the network only (inputs are tokenised / preprocessed once, outside the clock), on the same threads.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def make_probe(kind: str, root: Path) -> Path:
    from transferkit import datasets
    from transferkit.backbones import load_backbone
    from transferkit.data import stratified_sample
    from transferkit.features import extract_features
    from transferkit.heads.probe import probe_features

    name, spec, kw = (("sentiment-tweets", "st:all-MiniLM-L6-v2", {}) if kind == "text" else
                      ("mnist", "effnet:lite0", {}))
    ds = datasets.load(name)
    ds = ds.subset(stratified_sample(ds.labels, 600, seed=0), name=f"{name}[600]")
    ds.meta.update(spec=f"bundled:{name}", sample=600)
    fs = extract_features(load_backbone(spec, **kw), ds, out=root / f"{kind}-feats", precision="fp32",
                          progress=False)
    probe_features(fs, head="logreg", save=root / f"{kind}-model")
    return root / f"{kind}-model"


def timed(fn, reps: int) -> float:
    """Median seconds of `fn()` over `reps` runs (after two warm-ups)."""
    fn()
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(kind: str, root: Path, reps: int) -> list[dict]:
    import onnxruntime as ort

    from transferkit.export import export_onnx, model_network
    from transferkit.model import load_model
    from transferkit.model.data import own_test_split

    folder = make_probe(kind, root)
    report = export_onnx(folder, root / f"{kind}-onnx", quantize="int8")
    loaded = load_model(folder, device="cpu", precision="fp32")
    backbone = loaded.predictor.backbone
    test, _ = own_test_split(loaded.info)
    items = list(test.items)
    names = list(backbone.collate(items[:2]).keys())
    net, _ = model_network(loaded, names)
    one = backbone.collate(items[:1])
    many = backbone.collate((items * 2)[:64])
    rows = []

    def torch_run(batch: dict, bf16: bool = False) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            net(*(batch[n] for n in names))

    variants = [("torch eager fp32", lambda b: torch_run(b)), ("torch eager bf16", lambda b: torch_run(b, True))]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    for label, file in (("onnxruntime fp32", "model.onnx"), ("onnxruntime int8", "model.int8.onnx")):
        sess = ort.InferenceSession(str(root / f"{kind}-onnx" / file), opts, providers=["CPUExecutionProvider"])
        variants.append((label, lambda b, s=sess: s.run(None, {n: b[n].numpy() for n in names})))
    for label, fn in variants:
        lat = timed(lambda f=fn: f(one), reps)
        thr = 64 / timed(lambda f=fn: f(many), max(3, reps // 5))
        rows.append({"model": backbone.spec, "variant": label, "latency_ms": lat * 1000, "items_per_s": thr})
    acc = {"torch eager fp32": report.get("accuracy_torch"), "onnxruntime fp32": report.get("accuracy_fp32"),
           "onnxruntime int8": report.get("accuracy_int8")}
    base = rows[0]
    for r in rows:
        r["latency_ratio"] = base["latency_ms"] / r["latency_ms"]
        r["throughput_ratio"] = r["items_per_s"] / base["items_per_s"]
        r["test_accuracy"] = acc.get(r["variant"])
        r["test_items"] = len(items)
        r["max_prob_diff_vs_torch"] = {"onnxruntime fp32": report.get("max_prob_diff_fp32"),
                                       "onnxruntime int8": report.get("max_prob_diff_int8")}.get(r["variant"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", default="benchmarks/results/export_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("text", "image"):
            rows += bench(kind, Path(tmp), args.reps)
    print(f"{'model':22s} {'variant':18s} {'batch-1 ms':>10s} {'×':>5s} {'items/s @64':>11s} {'×':>5s} "
          f"{'test acc':>8s} {'max Δp':>8s}")
    for r in rows:
        acc = f"{r['test_accuracy']:.3f}" if r["test_accuracy"] is not None else ""
        dp = f"{r['max_prob_diff_vs_torch']:.1e}" if r["max_prob_diff_vs_torch"] is not None else ""
        print(f"{r['model']:22s} {r['variant']:18s} {r['latency_ms']:10.2f} {r['latency_ratio']:5.2f} "
              f"{r['items_per_s']:11.1f} {r['throughput_ratio']:5.2f} {acc:>8s} {dp:>8s}")
    from transferkit.runtime import cpu_bf16_hardware

    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
           "machine": platform.machine(), "bf16": cpu_bf16_hardware()[1]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "export_speed", "env": env, "rows": rows}, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
