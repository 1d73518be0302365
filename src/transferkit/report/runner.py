"""The comparison loop: every strategy on the same split and seed, one child process each, results.json after each.

results.json holds the settings (what `--resume` must match), the shared feature extraction, the shift
diagnostics (with a target), and one record per strategy: status (pending / ok / failed / skipped /
interrupted), metrics on the shared test split, times, peak memory of its own process, trainable
parameters, artefact paths, the error of a failed one, and an attempt counter with timestamps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from transferkit.errors import Interrupted
from transferkit.io import read_json, write_arrays, write_json
from transferkit.report.inputs import CompareSettings, Inputs, load_backbone_for, load_inputs
from transferkit.report.specs import CompareError, Strategy, check_modality, default_strategies, parse_strategies

FORMAT = "transferkit-compare"
RESULTS = "results.json"
#: Fine-tuning options `compare` passes through (FinetuneConfig fields); all others keep their defaults.
FINETUNE_DEFAULTS = {"epochs": 3}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _strategy_options(s: Strategy, finetune_options: dict, per_strategy: Callable[[str], dict] | None = None) -> dict:
    """The per-strategy settings a finished record must match to be skipped on --resume."""
    if s.route != "finetune":
        return {}
    return dict(sorted((per_strategy(s.method) if per_strategy else finetune_options).items()))


def _check_resume(out: Path, old: dict, new: dict) -> None:
    if old.get("format") != FORMAT:
        raise CompareError(f"{out / RESULTS} was not written by `transferkit compare`: choose another --out")
    before = CompareSettings.from_dict(old["settings"]).to_dict()  # keys added since then take their defaults
    if before.get("label_column") == "label" and new["settings"].get("label_column") is None:
        before["label_column"] = None  # an earlier version's default, which the table's `label` column now is
    changed = [k for k in new["settings"] if before.get(k) != new["settings"][k]]
    changed += [f"{k} data" for k in ("source", "target") if (old["inputs"].get(k) or {}).get("fingerprint")
                != (new["inputs"].get(k) or {}).get("fingerprint")]
    if old["inputs"].get("backbone") != new["inputs"].get("backbone"):
        changed.append("model")
    if changed:
        raise CompareError(f"--resume {out}: the report was made with other settings ({', '.join(changed)}); "
                           "resume with the same model, data and split settings, or choose another --out")


class Comparison:
    """One report folder: its results document and how to write it (atomically, after every change)."""

    def __init__(self, out: Path, doc: dict) -> None:
        self.out, self.doc = out, doc

    def save(self) -> None:
        self.doc["updated_at"] = _now()
        write_json(self.out / RESULTS, self.doc)

    def record(self, name: str) -> dict | None:
        return next((r for r in self.doc["strategies"] if r["name"] == name), None)

    def put(self, rec: dict) -> None:
        recs = self.doc["strategies"]
        i = next((i for i, r in enumerate(recs) if r["name"] == rec["name"]), None)
        if i is None:
            recs.append(rec)
        else:
            recs[i] = rec
        self.save()


def _extract(inputs: Inputs, settings: CompareSettings, log: Callable[[str], None], progress: bool,
             trust: dict) -> dict:
    """Features of source (and target) in the feature store; their paths and the time computing them took."""
    from transferkit.features import extract_features
    from transferkit.model import backbone_record

    backbone = load_backbone_for(settings, inputs.spec, trust)
    out: dict = {"backbone_record": backbone_record(backbone), "seconds": 0.0}
    for part, ds in (("source", inputs.source), ("target", inputs.target)):
        if ds is None:
            continue
        t0 = time.perf_counter()
        fs = extract_features(backbone, ds, precision=settings.precision, progress=progress)
        took = time.perf_counter() - t0
        cost = float(fs.meta.get("extract_seconds", took))  # what computing them took, even if cached earlier
        out[part] = str(fs.path)
        out[f"{part}_s"] = round(cost, 3)
        out["seconds"] += cost
        log(f"features of {part} ({len(ds)} items × {fs.feature_dim}): {fs.path} "
            + (f"(computed in {took:.1f} s)" if took > 1 else f"(cached; computing them took {cost:.1f} s)"))
    return out


def _shift(inputs: Inputs, features: dict, permutations: int, seed: int) -> dict:
    from transferkit.features import FeatureSet
    from transferkit.shift import shift_report

    Xs = FeatureSet.open(features["source"]).features()
    Xt = FeatureSet.open(features["target"]).features()
    rep = shift_report(Xs, Xt, ys=inputs.source.labels, yt=inputs.target_labels,
                       class_names=list(inputs.source.class_names), permutations=permutations, seed=seed)
    return {**rep.as_dict(), "rows": rep.rows()}


#: what torchrun / `accelerate launch` tell their processes: a strategy's child is one process of its own
_LAUNCHER_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
                  "GROUP_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
                  "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_ERROR_FILE")


def _child_env() -> dict:
    import transferkit

    root = str(Path(transferkit.__file__).resolve().parents[1])  # the child imports this very package
    path = os.environ.get("PYTHONPATH", "")
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS and not k.startswith("ACCELERATE_")}
    if "TORCHELASTIC_RUN_ID" in os.environ and env.get("OMP_NUM_THREADS") == "1":
        env.pop("OMP_NUM_THREADS")  # torchrun's one thread per process: a child alone has the machine's cores
    return {**env, "PYTHONPATH": root + (os.pathsep + path if path else ""),
            "TRANSFERKIT_COMPARE_PARENT": str(os.getpid()), "TOKENIZERS_PARALLELISM": "false"}


def _needs_features(inputs: Inputs, specs: list) -> bool:
    """Whether the comparison computes frozen features: for a target domain, or a probe or adaptation route."""
    return inputs.target is not None or any(s.route in ("probe", "adapt") for s in specs)


class _Helpers:
    """The processes other than 0 under torchrun / `accelerate launch`, as process 0 sees them: told once whether to
    extract with it, or why it stopped before that."""

    def __init__(self, group: tuple[int, int] | None) -> None:
        self.group, self.told = group, group is None

    def tell(self, message: dict) -> None:
        if not self.told:
            import torch.distributed as dist

            dist.broadcast_object_list([message], src=0)
            self.told = True


def _help_extract(settings: CompareSettings, trust: dict | None) -> None:
    """A process other than 0 under torchrun / `accelerate launch`: compute its part of the frozen features with
    process 0 (`extract_features` splits the shards), then leave the strategies, the results and the report to it."""
    import torch.distributed as dist

    inputs = load_inputs(settings)  # while process 0 loads them too: a large source is scanned by both at once
    message: list = [None]
    dist.broadcast_object_list(message, src=0)
    if "error" in message[0]:
        raise CompareError(f"process 0 stopped before extracting: {message[0]['error']}")
    if message[0]["extract"]:
        _extract(inputs, settings, lambda m: None, False, {k: bool(v) for k, v in (trust or {}).items() if v})


def _run_child(task_file: Path, log_file: Path) -> int:
    """Run one strategy's process to its end; its exit code (negative: killed by that signal)."""
    with open(log_file, "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "transferkit.report.child", str(task_file)],
                                stdout=logf, stderr=subprocess.STDOUT, env=_child_env())
        interrupted = False
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # the child got the same Ctrl-C: let it save its state and finish
                interrupted = True
    if interrupted:
        raise _ChildInterrupted(code)
    return code


class _ChildInterrupted(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-400:]


def _run_strategy(cmp: Comparison, s: Strategy, task_base: dict, options: dict, features: dict,
                  attempt: int) -> dict:
    run_dir = cmp.out / "runs" / s.folder
    run_dir.mkdir(parents=True, exist_ok=True)
    result_file = run_dir / "result.json"
    result_file.unlink(missing_ok=True)
    task = {**task_base, "strategy": {"route": s.route, "method": s.method, "name": s.name},
            "options": options, "run_dir": str(run_dir), "result": str(result_file)}
    write_json(run_dir / "task.json", task)
    log_file = run_dir / "log.txt"
    rec = {"name": s.name, "route": s.route, "method": s.method, "settings": options, "attempt": attempt,
           "started_at": _now(), "artefacts": {"folder": str(run_dir), "log": str(log_file)}}
    interrupted = None
    try:
        code = _run_child(run_dir / "task.json", log_file)
    except _ChildInterrupted as e:
        code, interrupted = e.code, e
    rec["finished_at"] = _now()
    res = read_json(result_file) if result_file.exists() else None
    rec["peak_memory_mb"] = round(res["peak_memory_mb"], 1) if res else None
    if res is None:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        rec.update(status="interrupted" if interrupted else "failed",
                   error=f"the strategy's process ended with {how} before writing its result; "
                         f"log {log_file}: {_tail(log_file)}")
    else:
        rec["status"] = res["status"]
        rec["process_s"] = round(res["wall_s"], 3)
        if res["status"] == "ok":
            # the frozen features a route is built on: source for a probe (target ones only score it), both
            # domains for adaptation, none for fine-tuning (it runs the backbone itself); an ensemble costs what
            # its members cost
            feats = {"probe": features["source_s"], "adapt": features["seconds"]}.get(s.route, 0.0) \
                + float(res.get("members_s") or 0.0)
            rec.update(metrics=res["metrics"], chosen=res.get("chosen"), fit_s=round(res["fit_s"], 3),
                       features_s=round(feats, 3), wall_s=round(res["fit_s"] + feats, 3),
                       trainable_parameters=res["trainable_parameters"],
                       total_parameters=res.get("total_parameters"), history=res.get("history"),
                       stopped=res.get("stopped"),
                       gpu_peak_memory_mb=res.get("gpu_peak_memory_mb"))
            rec["artefacts"].update(res["artefacts"])
        else:
            rec["error"] = res["error"]
    if interrupted:
        cmp.put(rec)
        raise Interrupted(f"{s.name} stopped after saving its state; results so far are in {cmp.out / RESULTS}; "
                          "rerun with --resume to continue")
    return rec


def run_compare(
    settings: CompareSettings,
    strategies: str | Callable[[str], str] | None,
    out: str | Path,
    *,
    budget_s: float | None = None,
    resume: bool = False,
    finetune_options: dict | None = None,
    strategy_options: Callable[[str], dict] | None = None,
    deadline: float | None = None,
    race: bool = False,
    on_record: Callable[[dict], None] | None = None,
    permutations: int = 200,
    progress: bool = False,
    log: Callable[[str], None] = lambda m: None,
    trust: dict | None = None,
) -> dict | None:
    """Run every strategy (see the module docstring) into report folder `out`; returns the results document.

    Launched as several processes (torchrun, `accelerate launch`), every process loads the data and computes its
    share of the frozen features (`extract_features` splits the shards); process 0 alone then runs the strategies
    (each child a single process) and writes the results; the others return None.

    strategies: comma-separated specs, or a function of the data's modality that gives them; None runs
    `default_strategies` of the data's modality (its baseline first).
    strategy_options: fine-tuning method -> its options (default: `finetune_options` for every method).
    deadline: a `time.perf_counter()` time by which fine-tuning runs must end (each gets an equal share of what is
    left among the fine-tuning runs still to come as its `time_limit_s`, and stops there keeping its best weights);
    budget_s only stops new strategies from starting.
    race: fine-tuning runs stop early once they trail the leader so far on validation (`race_threshold`).
    on_record: called with the results document after each strategy ends (a live leaderboard).
    trust: {"trust_pickle": bool, "trust_remote_code": bool} for loading the backbone (never recorded)."""
    from transferkit.features.extract import process_group

    group = process_group()
    if group is not None and group[0] != 0:
        _help_extract(settings, trust)
        return None
    helpers = _Helpers(group)
    try:
        return _run_compare(settings, strategies, out, helpers, budget_s=budget_s, resume=resume,
                            finetune_options=finetune_options, strategy_options=strategy_options, deadline=deadline,
                            race=race, on_record=on_record, permutations=permutations, progress=progress, log=log,
                            trust=trust)
    except BaseException as e:
        helpers.tell({"error": f"{type(e).__name__}: {e}"})  # unless they were told to extract: then they know
        raise


def _run_compare(settings: CompareSettings, strategies: str | Callable[[str], str] | None, out: str | Path,
                 helpers: _Helpers, *,
                 budget_s: float | None, resume: bool, finetune_options: dict | None,
                 strategy_options: Callable[[str], dict] | None, deadline: float | None, race: bool,
                 on_record: Callable[[dict], None] | None, permutations: int, progress: bool,
                 log: Callable[[str], None], trust: dict | None) -> dict:
    from filelock import FileLock, Timeout

    from transferkit.finetune import FinetuneConfig

    t_start = time.perf_counter()
    specs = parse_strategies(strategies, with_target=settings.target is not None) \
        if isinstance(strategies, str) and strategies else None
    options = {**FINETUNE_DEFAULTS, **(finetune_options or {})}
    per_strategy = (lambda m: {**FINETUNE_DEFAULTS, **strategy_options(m)}) if strategy_options else None
    if specs is None or any(s.route == "finetune" for s in specs):  # bad options fail before data or model load
        try:
            FinetuneConfig(**{**options, "val": settings.val, "test": settings.test, "seed": settings.seed})
        except TypeError as e:
            raise CompareError(f"fine-tuning option not known ({e}): use FinetuneConfig field names, "
                               "e.g. lr=5e-4, lora_r=4") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".compare.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise CompareError(f"another `transferkit compare` is writing {out}: wait for it or choose another --out"
                           ) from None
    try:
        prior = read_json(out / RESULTS) if (out / RESULTS).exists() else None
        if prior is not None and not resume:
            raise CompareError(f"{out} already holds a comparison: add --resume to continue it, or choose "
                               "another --out")
        inputs = load_inputs(settings)
        if specs is None:
            text = strategies(inputs.source.modality) if callable(strategies) else \
                default_strategies(inputs.source.modality)
            specs = parse_strategies(text, with_target=settings.target is not None)
        check_modality(specs, inputs.source.modality)
        doc = {"format": FORMAT, "version": 1, "settings": settings.to_dict(), "inputs": inputs.record()}
        if prior is not None:
            _check_resume(out, prior, doc)
            doc = {**prior, "settings": doc["settings"], "inputs": doc["inputs"]}
        else:
            doc.update(started_at=_now(), strategies=[], shift=None)
        cmp = Comparison(out, doc)
        trust = {k: bool(v) for k, v in (trust or {}).items() if v}
        helpers.tell({"extract": _needs_features(inputs, specs)})
        if _needs_features(inputs, specs):  # with several processes, each computes its share of the shards
            features = _extract(inputs, settings, log, progress, trust)
        else:  # baselines and fine-tuning read the raw items: no frozen features to compute
            features = {"backbone_record": None, "seconds": 0.0, "source_s": 0.0}
        doc["features"] = {k: v for k, v in features.items() if k != "backbone_record"}
        split = inputs.split
        write_arrays(out / "split.safetensors", {"train": split.train, "val": split.val, "test": split.test})
        if inputs.target is not None and not doc.get("shift"):
            log("shift diagnostics (MMD test, proxy A-distance, per-class drift)")
            doc["shift"] = _shift(inputs, features, permutations, settings.seed)
        for s in specs:
            if cmp.record(s.name) is None:
                cmp.doc["strategies"].append({"name": s.name, "route": s.route, "method": s.method,
                                              "status": "pending", "attempt": 0})
        cmp.save()
        task_base = {"settings": settings.to_dict(), "fingerprint": inputs.source.fingerprint,
                     "class_names": list(inputs.source.class_names), "split": str(out / "split.safetensors"),
                     "features": {k: features.get(k) for k in ("source", "target")},
                     "backbone_record": features["backbone_record"], "trust": trust}
        for i, s in enumerate(specs, 1):
            old = cmp.record(s.name) or {}
            opts = _strategy_options(s, options, per_strategy)
            tag = f"[{i}/{len(specs)}] {s.name}"
            if old.get("status") == "ok" and old.get("settings") == opts:
                log(f"{tag}: skipped, finished in attempt {old['attempt']} ({old.get('finished_at')})")
                continue
            elapsed = time.perf_counter() - t_start
            if budget_s is not None and elapsed >= budget_s:
                cmp.put({"name": s.name, "route": s.route, "method": s.method, "status": "skipped",
                         "attempt": old.get("attempt", 0), "settings": opts,
                         "error": f"budget {budget_s:g} s spent ({elapsed:.1f} s elapsed) before it started"})
                log(f"{tag}: skipped, budget spent ({elapsed:.1f} s of {budget_s:g} s)")
                continue
            log(f"{tag}: running (attempt {old.get('attempt', 0) + 1})")
            base = task_base
            if s.route == "ensemble":  # what it selects from: every strategy that finished before it
                base = {**task_base, "members": [
                    {"name": r["name"], "model": r["artefacts"].get("model"), "proba": r["artefacts"].get("proba"),
                     "wall_s": r["wall_s"], "trainable_parameters": r["trainable_parameters"]}
                    for r in ok_records(cmp.doc) if r["route"] != "ensemble" and r["artefacts"].get("model")]}
            if deadline is not None and s.route == "finetune":  # an equal share of what is left among those to come
                left = sum(1 for t in specs[i - 1:] if t.route == "finetune"
                           and (cmp.record(t.name) or {}).get("status") != "ok")
                base = {**task_base, "time_limit_s": round(max((deadline - time.perf_counter()) / max(left, 1), 1.0),
                                                           1)}
            if race and s.route == "finetune":
                base = {**base, "stop_below": race_threshold(cmp.doc, len(inputs.split.val))}
            rec = _run_strategy(cmp, s, base, opts, features, old.get("attempt", 0) + 1)
            cmp.put(rec)
            if rec["status"] == "ok":
                m = rec["metrics"]
                log(f"{tag}: ok, "
                    + (f"validation accuracy {m['val_accuracy']:.4f}, " if "val_accuracy" in m else "")
                    + f"test accuracy {m['accuracy']:.4f}"
                    + (f", target accuracy {m['target_accuracy']:.4f}" if "target_accuracy" in m else "")
                    + f", {rec['wall_s']:.1f} s, {rec['trainable_parameters']:,} trainable parameters, "
                    f"peak {rec['peak_memory_mb']:.0f} MB")
            else:
                log(f"{tag}: {rec['status']}: {rec.get('error', '')}")
            if on_record is not None:
                on_record(cmp.doc)
        cmp.doc["finished_at"] = _now()
        cmp.save()
        return cmp.doc
    finally:
        lock.release()


def race_threshold(doc: dict, n_val: int) -> float | None:
    """The validation accuracy a fine-tuning run must reach within its first epochs (`race_after`) to go on: the
    best so far (any finished strategy's) less two binomial standard errors of it on `n_val` items, the accuracy
    smoothed as (k + 1)/(n + 2) so that a perfect score on 5 items is not taken as certain (at least 2 points), so
    noise alone does not stop a run; None before anything finished."""
    scores = [r["metrics"]["val_accuracy"] for r in ok_records(doc) if "val_accuracy" in (r.get("metrics") or {})]
    if not scores or n_val < 1:
        return None
    lead = max(scores)
    p = (lead * n_val + 1) / (n_val + 2)
    return round(lead - max(0.02, 2 * float(np.sqrt(p * (1 - p) / n_val))), 4)


def primary_metric(doc: dict) -> str:
    """The metric routes are judged by: target accuracy when the target has labels, else test accuracy."""
    return "target_accuracy" if (doc["inputs"].get("target") or {}).get("labelled") else "accuracy"


def ok_records(doc: dict) -> list[dict]:
    return [r for r in doc["strategies"] if r.get("status") == "ok"]


def predictions(rec: dict, target: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """(y_true, y_pred) of a finished strategy on the test split (or the labelled target), from predictions.json."""
    p = (rec.get("artefacts") or {}).get("predictions")
    if not p or not Path(p).exists():
        return None
    d = read_json(p)
    pre = "target_" if target else ""
    if pre + "y_pred" not in d:
        return None
    return np.asarray(d[pre + "y_true"]), np.asarray(d[pre + "y_pred"])
