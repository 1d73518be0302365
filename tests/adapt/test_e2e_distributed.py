"""End-to-end adaptation in two data-parallel CPU processes (gloo, launched by torchrun) ends where one process
ends: the target batches are drawn per global batch and split like the source batches, MMD is computed on the
rows of both processes, and the domain term's own parameters (DANN's discriminator) are all-reduced with the
model's."""

import csv
import os
import subprocess
import sys

import pytest
import torch
from same_run import assert_same_run

from transferkit.finetune.checkpoint import load_tensors
from transferkit.io import read_json


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory, tiny_bert):
    """The tiny BERT without dropout, 96 real labelled tweets (source) and 64 unlabelled movie reviews (target)."""
    import shutil

    from transferkit import datasets
    from transferkit.data import stratified_sample

    root = tmp_path_factory.mktemp("dist_adapt")
    shutil.copytree(tiny_bert, root / "bert")
    for name, n, labelled in (("sentiment-tweets", 96, True), ("sentiment-movies", 64, False)):
        ds = datasets.load(name)
        with open(root / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"] if labelled else ["text"])
            for i in stratified_sample(ds.labels, n, seed=0):
                w.writerow([ds.items[i], ds.class_names[ds.labels[i]]] if labelled else [ds.items[i]])
    return root


def _adapt(root, method: str, out: str, processes: int, port: int) -> subprocess.CompletedProcess:
    args = ["-m", "transferkit", "adapt", "--method", method, "--model", f"hf:{root / 'bert'}",
            "--source", str(root / "sentiment-tweets.csv"), "--target", str(root / "sentiment-movies.csv"),
            "--epochs", "2", "--param", "batch_size=16", "--param", "lr=1e-3", "--precision", "fp32", "--json",
            "--out", str(root / out)]
    launch = [] if processes == 1 else ["-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                                        "--master_port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *launch, *args], env=env, capture_output=True,
                          text=True)


@pytest.mark.slow
def test_mmd_e2e_two_processes_match_one(tiny_pair):
    """MMD draws no random numbers, so two processes must reach one process's weights (fp32: bf16 would round the
    all-reduced sums differently). MMD is not a sum over items: computed on each process's half of the micro-batch
    instead of on the rows gathered from both (`TermBatch.gather`), it moves the weights by up to 3e-3 and fails
    this."""
    one = _adapt(tiny_pair, "mmd-e2e", "one", 1, 0)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _adapt(tiny_pair, "mmd-e2e", "two", 2, 29527)
    assert two.returncode == 0, two.stderr[-3000:]
    _, info_two = assert_same_run(tiny_pair / "one", tiny_pair / "two")
    assert info_two["adaptation"]["method"] == "mmd-e2e" and info_two["terms"]["domain"]["target_items"] == 64
    a = load_tensors(tiny_pair / "one" / "model.safetensors")
    base = load_tensors(tiny_pair / "bert" / "model.safetensors")
    moved = sum(not torch.allclose(a[k], base[k.removeprefix("backbone.")])
                for k in a if k.removeprefix("backbone.") in base)
    assert moved > 0, "the backbone should have trained"


@pytest.mark.slow
def test_dann_e2e_runs_in_two_processes(tiny_pair):
    """DANN's discriminator is a parameterised loss term: wrapped for DDP like the model, trained, and never
    written into the model folder. Its dropout draws differ per process, so this checks the run, not equality."""
    two = _adapt(tiny_pair, "dann-e2e", "dann2", 2, 29537)
    assert two.returncode == 0, two.stderr[-3000:]
    info = read_json(tiny_pair / "dann2" / "run.json")
    assert info["processes"] == 2 and info["adaptation"]["method"] == "dann-e2e"
    assert info["terms"]["domain"]["method"] == "dann"
    assert info["status"] == "complete" and info["steps"] == 10  # 2 epochs × ceil(0.55 × 96 / 16) batches
    saved = load_tensors(tiny_pair / "dann2" / "model.safetensors")
    assert not any("disc" in k or k.startswith("domain.") for k in saved)
    assert not (tiny_pair / "dann2" / "state").exists()
