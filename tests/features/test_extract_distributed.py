"""`torchrun --nproc_per_node 2 -m transferkit extract`: two CPU processes (gloo) write one feature set, byte for
byte the one a single process writes, and a killed process's shards are computed by the next run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

# 1,797 real UCI digits, 15 shards of 128
ARGS = ["-m", "transferkit", "extract", "--data", "bundled:digits", "--model", "effnet:lite0", "--image-size", "32",
        "--shard-size", "128", "--batch-size", "32", "--precision", "fp32", "--optimize", "none", "--out"]


def _env(**extra):
    # one thread per process in both runs, so the arithmetic is the same wherever a shard is computed
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


def _launch(processes: int, port: int) -> list[str]:
    return [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                                                    str(processes), "--master_port", str(port)]


def _files(folder):
    """Every file but meta.json (which records timings) by name → bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "meta.json"}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "feats"
    r = subprocess.run([*_launch(1, 0), *ARGS, str(out)], env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_two_processes_write_the_one_process_bytes(one_process, tmp_path):
    out = tmp_path / "feats"
    r = subprocess.run([*_launch(2, 29541), *ARGS, str(out)], env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] and meta["processes"] == 2 and meta["shards_computed"] == meta["n_shards"] == 15
    a, b = _files(one_process), _files(out)
    assert sorted(a) == sorted(b) and len([n for n in a if n.startswith("shard-")]) == 15
    assert [n for n in a if a[n] != b[n]] == []
    assert r.stdout.count("shards computed by 2 processes") == 1  # only the main process reports


def test_a_killed_process_is_redone_by_the_next_run(one_process, tmp_path):
    out = tmp_path / "feats"
    run = subprocess.Popen([*_launch(2, 29543), *ARGS, str(out)], env=_env(TRANSFERKIT_SHARD_DELAY="0.4"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = None
    deadline = time.time() + 240
    while time.time() < deadline and run.poll() is None:
        if out.exists() and len(list(out.glob("shard-*.safetensors"))) >= 3:
            for child in psutil.Process(run.pid).children(recursive=True):
                try:
                    if child.environ().get("RANK") == "1":
                        victim = child
                except psutil.Error:
                    continue
            if victim is not None:
                victim.send_signal(signal.SIGKILL)
                break
        time.sleep(0.1)
    assert victim is not None, "the second process was not found while the extraction ran"
    run.communicate(timeout=120)
    assert run.returncode != 0  # torchrun stops the job when a process dies
    meta = json.loads((out / "meta.json").read_text())
    written = len(list(out.glob("shard-*.safetensors")))
    assert not meta["complete"] and 3 <= written < 15
    r = subprocess.run([*_launch(2, 29545), *ARGS, str(out)], env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] and meta["shards_computed"] == 15 - written  # none computed twice
    a, b = _files(one_process), _files(out)
    assert [n for n in a if a.get(n) != b.get(n)] == [] and sorted(a) == sorted(b)


SCRIPT = """
import sys
import torch.distributed as dist
from transferkit import datasets
from transferkit.backbones import load_backbone
from transferkit.features import extract_features
from transferkit.features.extract import process_group

rank, world = process_group()
def hook(shard):
    if rank == 1:
        raise RuntimeError("disk full on process 1")
try:
    extract_features(load_backbone("effnet:lite0", image_size=32), datasets.load("digits"), out=sys.argv[1],
                     shard_size=128, batch_size=32, precision="fp32", optimize="none", progress=False, on_shard=hook)
except Exception as e:
    print(f"rank {rank}: {type(e).__name__}: {e}", flush=True)
    sys.exit(3)
"""


def test_a_failing_process_stops_every_process_and_nothing_is_marked_complete(one_process, tmp_path):
    """Process 1 fails after its first shard while process 0 finishes its own: process 0 must hear of it and
    raise too (not mark the set complete, not wait for ever), keeping the shards written."""
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    out = tmp_path / "feats"
    r = subprocess.run([*_launch(2, 29547), str(script), str(out)], env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0
    assert "rank 1: RuntimeError: disk full on process 1" in r.stdout
    assert "rank 0: FeatureStoreError" in r.stdout and "failed in process 1" in r.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert not meta["complete"] and 8 <= len(list(out.glob("shard-*.safetensors"))) < 15


def test_rank_under_torchrun_splits_the_extraction_and_reports_once(tmp_path):
    """`torchrun -m transferkit rank`: the processes split the extraction (2 shards of the 1,797 digits, one each)
    and only the main process prints; the scores are those of one process (to rounding)."""
    rank = ["-m", "transferkit", "rank", "--models", "effnet:lite0", "--data", "bundled:digits", "--image-size",
            "32", "--precision", "fp32", "--json"]
    rows = {}
    for processes, port in ((1, 0), (2, 29549)):
        env = _env(TRANSFERKIT_CACHE=str(tmp_path / f"cache{processes}"))
        r = subprocess.run([*_launch(processes, port), *rank], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.count('"logme"') == 1  # one report, from the main process
        rows[processes] = json.loads(r.stdout)[0]
        assert r.stderr.count("extracting effnet:lite0") == 1
    assert Path(rows[2]["features"]).is_relative_to(tmp_path / "cache2")
    meta = json.loads((Path(rows[2]["features"]) / "meta.json").read_text())
    assert meta["complete"] and meta["processes"] == 2 and meta["shards_computed"] == 2
    # rank has no --optimize: each run times the frozen graph against eager itself (its own cache), and the two may
    # choose differently, which rounds differently (extract's byte-identity is tested above with --optimize none)
    assert rows[2]["logme"] == pytest.approx(rows[1]["logme"], rel=1e-5) and not rows[2]["cached"]


def test_compare_under_torchrun_splits_its_extraction_and_reports_once(tmp_path):
    """`torchrun -m transferkit compare`: both processes compute the frozen features (one feature set, processes=2),
    process 0 alone runs the strategies (single-process children) and reports; the results are one process's."""
    args = ["-m", "transferkit", "compare", "--data", "bundled:digits", "--model", "effnet:lite0", "--image-size", "32",
            "--precision", "fp32", "--strategies", "probe:logreg"]  # 1,797 digits: 2 shards of 1,024
    cache = {n: tmp_path / f"cache-{n}" for n in (1, 2)}
    runs = {}
    for n in (1, 2):
        if n == 2:  # the same measured decisions (graph capture, precision), not the first run's features
            cache[2].mkdir()
            shutil.copy(cache[1] / "runtime.json", cache[2] / "runtime.json")
        runs[n] = subprocess.run([*_launch(n, 29547), *args, "--out", str(tmp_path / f"cmp-{n}")],
                                 env=_env(TRANSFERKIT_CACHE=str(cache[n])), capture_output=True, text=True)
    for r in runs.values():
        assert r.returncode == 0, r.stderr[-3000:]
    docs = {n: json.loads((tmp_path / f"cmp-{n}" / "results.json").read_text()) for n in (1, 2)}
    metas = {n: json.loads((Path(docs[n]["features"]["source"]) / "meta.json").read_text()) for n in (1, 2)}
    assert metas[1]["processes"] == 1 and metas[2]["processes"] == 2 and metas[2]["shards_computed"] == 2
    a, b = (_files(Path(docs[n]["features"]["source"])) for n in (1, 2))
    assert sorted(a) == sorted(b) and [n for n in a if a[n] != b[n]] == []  # byte for byte
    probe = {n: next(s for s in docs[n]["strategies"] if s["name"] == "probe:logreg") for n in (1, 2)}
    assert probe[2]["status"] == "ok" and probe[2]["metrics"] == probe[1]["metrics"]
    assert runs[2].stdout.count("compare on") == 1  # only process 0 prints the table
