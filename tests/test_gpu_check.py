"""benchmarks/gpu_check.py: its quick CPU run measures every row it prints, and --device cuda without a GPU is
refused in one line."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def run_script(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the isolated TRANSFERKIT_CACHE of conftest goes along
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)


@pytest.mark.slow
def test_quick_cpu_run_measures_every_row(tmp_path):
    done = run_script("--device", "cpu", "--quick", "--out", str(tmp_path / "x.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "x.json").read_text())
    rows = doc["rows"]
    got = {(r["part"], r["model"], r["variant"], r["precision"]) for r in rows if r["part"] == "extract"}
    for model in ("effnet:lite0", "timm:resnet50", "timm:vit_small_patch16_224"):
        assert {("extract", model, "transferkit", "fp32"), ("extract", model, "transferkit", "bf16"),
                ("extract", model, "hand loop", "fp32")} <= got
        assert (("extract", model, "hand loop channels-last", "fp32") in got) == ("vit" not in model)
    tuned = [r for r in rows if r["part"] == "finetune"]
    assert {(r["model"], r["variant"]) for r in tuned} == {(m, s) for m in ("st:all-MiniLM-L6-v2", "effnet:lite0")
                                                           for s in ("full", "lora")}
    assert all(r["peak_memory_mb"] > 0 and r["precision"] in ("fp32", "bf16") for r in tuned)
    measured = [r for r in rows if r["part"] != "data-parallel"]
    assert all(math.isfinite(r["throughput"]) and r["throughput"] > 0 for r in measured)
    (dp,) = [r for r in rows if r["part"] == "data-parallel"]  # one CPU: said, not measured
    assert dp["throughput"] is None and dp["note"].startswith("not measured")
    table = done.stdout
    assert "torch " + torch.__version__ in table and "precision auto = " in table
    assert all(r["note"] in table for r in rows)  # every row is printed


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_exits_with_one_line():
    done = run_script("--device", "cuda", timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: --device cuda"), done.stderr
    assert "no CUDA GPU" in lines[0] and "Traceback" not in done.stderr
    assert done.stdout == ""
