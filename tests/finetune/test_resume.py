"""An interrupted run, resumed, ends exactly where an uninterrupted run ends; bad resumes are refused."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from transferkit.backbones import load_backbone
from transferkit.finetune import FinetuneConfig, FinetuneError, Interrupted, finetune
from transferkit.finetune.checkpoint import load_tensors

# 112 training items / batch 16 = 7 steps per epoch; drop-connect makes the RNG part of the state
CONFIG = dict(strategy="full", epochs=2, batch_size=16, lr=1e-4, checkpoint_every=3)


def _bb():
    return load_backbone("effnet:lite0", image_size=32)


def _same_weights(a, b):
    ta, tb = load_tensors(a / "model.safetensors"), load_tensors(b / "model.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mnist_160):
    out = tmp_path_factory.mktemp("ref") / "run"
    return finetune(_bb(), mnist_160, out, FinetuneConfig(**CONFIG), progress=False)


@pytest.fixture(scope="module")
def mnist_160():
    from transferkit import datasets
    from transferkit.data import stratified_sample

    ds = datasets.load("mnist")
    return ds.subset(stratified_sample(ds.labels, 160, seed=1))


@pytest.mark.parametrize("stop", [2, 7, 10])
def test_resume_matches_an_uninterrupted_run(stop, reference, mnist_160, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted, match="--resume"):
        finetune(_bb(), mnist_160, out, FinetuneConfig(**CONFIG), progress=False, stop_after_steps=stop)
    assert (out / "state" / "trainer.json").exists()
    with pytest.raises(FinetuneError, match="add --resume"):
        finetune(_bb(), mnist_160, out, FinetuneConfig(**CONFIG), progress=False)
    resumed = finetune(_bb(), mnist_160, out, FinetuneConfig(**CONFIG), progress=False, resume=True)
    _same_weights(reference.out, out)
    assert resumed.metrics == reference.metrics
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in reference.history])
    assert not (out / "state").exists()  # resume state is removed once the run completes


def test_resume_refuses_changed_settings_and_data(mnist_160, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        finetune(_bb(), mnist_160, out, FinetuneConfig(**CONFIG), progress=False, stop_after_steps=1)
    with pytest.raises(FinetuneError, match="settings changed.*lr"):
        finetune(_bb(), mnist_160, out, FinetuneConfig(**{**CONFIG, "lr": 1e-3}), progress=False, resume=True)
    with pytest.raises(FinetuneError, match="data differ"):
        finetune(_bb(), mnist_160.subset(range(150)), out, FinetuneConfig(**CONFIG), progress=False,
                 resume=True)
    with pytest.raises(FinetuneError, match="no run there"):
        finetune(_bb(), mnist_160, tmp_path / "nothing", FinetuneConfig(**CONFIG), progress=False, resume=True)


def test_completed_run_is_not_overwritten(reference, mnist_160):
    with pytest.raises(FinetuneError, match="already holds a finished run"):
        finetune(_bb(), mnist_160, reference.out, FinetuneConfig(**CONFIG), progress=False)
    again = finetune(_bb(), mnist_160, reference.out, FinetuneConfig(**CONFIG), progress=False, resume=True)
    assert again.metrics == reference.metrics


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, mnist_160):
    """The finetune command on 160 MNIST PNGs, and the weights its uninterrupted run ends with."""
    from PIL import Image

    root = tmp_path_factory.mktemp("cli")
    folder = root / "images"
    for i, (img, y) in enumerate(zip(mnist_160.items, mnist_160.labels)):
        (folder / mnist_160.class_names[y]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / mnist_160.class_names[y] / f"{i}.png")
    cmd = [sys.executable, "-m", "transferkit", "finetune", "--data", str(folder), "--model", "effnet:lite0",
           "--image-size", "32", "--strategy", "full", "--epochs", "3", "--batch-size", "16", "--lr", "1e-4",
           "--checkpoint-every", "2", "--out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*cmd, str(root / "ref")], check=True, env=env, capture_output=True)
    return cmd, env, root / "ref"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_cli_killed_then_resumed_matches(sig, cli_run, tmp_path):
    """A real signal at a checkpointed step: SIGINT exits 130 after saving, SIGKILL leaves the last checkpoint."""
    cmd, env, ref = cli_run
    out = tmp_path / "run"
    cmd = [*cmd, str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trainer = out / "state" / "trainer.json"
    deadline = time.time() + 300
    while not trainer.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "--resume" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _same_weights(ref, out)
