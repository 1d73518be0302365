"""Two data-parallel CPU processes (gloo, launched by torchrun) end where one process ends."""

import csv
import os
import subprocess
import sys

import pytest
from same_run import assert_same_run


@pytest.fixture(scope="module")
def tiny_text_task(tmp_path_factory, tiny_bert):
    """The tiny BERT without dropout (so both runs draw no random numbers) and 120 real tweets."""
    import shutil

    from transferkit import datasets
    from transferkit.data import stratified_sample

    root = tmp_path_factory.mktemp("dist")
    shutil.copytree(tiny_bert, root / "bert")
    ds = datasets.load("sentiment-tweets")
    with open(root / "tweets.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in stratified_sample(ds.labels, 120, seed=0):
            w.writerow([ds.items[i], ds.class_names[ds.labels[i]]])
    return root


@pytest.mark.slow
def test_two_processes_match_one(tiny_text_task):
    """fp32 on every host: the split is exact in arithmetic, but bf16 rounds one all-reduced sum differently."""
    root = tiny_text_task
    args = ["-m", "transferkit", "finetune", "--model", f"hf:{root / 'bert'}", "--data", str(root / "tweets.csv"),
            "--epochs", "2", "--batch-size", "16", "--lr", "1e-3", "--json", "--precision", "fp32", "--out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one = subprocess.run([sys.executable, *args, str(root / "one")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29517", *args, str(root / "two")], env=env, capture_output=True,
                         text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    info_one, _ = assert_same_run(root / "one", root / "two")
    # the unused BERT pooler is neither trained nor counted
    assert not any("pooler" in n for n in info_one["saved_parameters"])
