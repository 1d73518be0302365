"""`transferkit extract` under real signals: interrupted at a seeded random point, then rerun to completion.

A Ctrl-C (SIGINT to the process group, as a terminal sends it) must end the command with one line and exit
code 130; SIGKILL allows no cleanup at all. Either way, rerunning the same command must finish the feature
set, and every shard and the labels must equal those of an uninterrupted run into another folder.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from transferkit import datasets

N_ITEMS, SHARD = 200, 10  # 20 shards


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """200 real UCI digits as PNG files in one subfolder per class."""
    from PIL import Image

    root = tmp_path_factory.mktemp("digits-png") / "imgs"
    ds = datasets.load("digits")
    for i in range(N_ITEMS):
        folder = root / ds.class_names[ds.labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.items[i]).save(folder / f"{i:04d}.png")
    return root


def _cmd(data, out):
    return [sys.executable, "-m", "transferkit.cli", "extract", "--data", str(data), "--model", "effnet:lite0",
            "--image-size", "32", "--batch-size", "5", "--shard-size", str(SHARD), "--optimize", "none",
            "--out", str(out)]


def _env(delay=0.0):
    """`delay`: TRANSFERKIT_SHARD_DELAY, a pause after each shard, so that the extraction is still running when
    the signal comes, on a fast idle machine as on a loaded one (20 shards × 0.25 s: at least 2.5 s left after
    the tenth shard)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "PYTHONUNBUFFERED": "1",
            "TRANSFERKIT_SHARD_DELAY": str(delay)}


@pytest.fixture(scope="module")
def reference(digit_folder, tmp_path_factory):
    """An uninterrupted run: the folder every resumed run must match."""
    out = tmp_path_factory.mktemp("ref") / "f"
    r = subprocess.run(_cmd(digit_folder, out), capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr
    return out


def _shards(folder):
    return sorted(p.name for p in folder.glob("shard-*.safetensors"))


def _interrupt(data, out, sig, seed):
    """Start extract, wait until a seeded random number of shards is on disk (+ a random few ms), send `sig`."""
    rng = random.Random(seed)
    target, extra = rng.randint(1, N_ITEMS // SHARD // 2), rng.uniform(0.0, 0.05)
    proc = subprocess.Popen(_cmd(data, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(delay=0.25), start_new_session=True)
    deadline = time.monotonic() + 600
    while len(_shards(out)) < target:
        assert proc.poll() is None, f"extract ended before {target} shards: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(extra)
    assert proc.poll() is None, "extract finished before the signal: raise TRANSFERKIT_SHARD_DELAY"
    os.killpg(proc.pid, sig)  # the whole group, like a terminal's Ctrl-C (DataLoader workers included)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def _assert_same_features(out, ref):
    assert _shards(out) == _shards(ref) and len(_shards(ref)) == N_ITEMS // SHARD
    for name in [*_shards(ref), "labels.safetensors"]:
        a, b = load_file(str(out / name)), load_file(str(ref / name))
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")
    timing = ("extract_seconds", "items_computed", "shards_computed")  # what the last run itself did
    meta_a, meta_b = (json.loads((f / "meta.json").read_text()) for f in (out, ref))
    assert {k: v for k, v in meta_a.items() if k not in timing} == {k: v for k, v in meta_b.items() if k not in timing}
    assert meta_a["complete"] is True
    assert not list(out.glob(".*.tmp")), "leftover temp files after the rerun"


def _rerun(data, out):
    r = subprocess.run(_cmd(data, out), capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr
    return r


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_ctrl_c_exits_cleanly_and_the_rerun_resumes(digit_folder, reference, tmp_path, seed):
    out = tmp_path / "f"
    rc, _, stderr = _interrupt(digit_folder, out, signal.SIGINT, seed)
    assert rc == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "interrupted" in stderr and "rerun the same command to resume" in stderr
    done = len(_shards(out))
    assert 1 <= done < N_ITEMS // SHARD, "the signal did not land mid-run"
    assert json.loads((out / "meta.json").read_text())["complete"] is False
    assert not list(out.glob(".*.tmp")), "Ctrl-C left a temp file behind"
    r = _rerun(digit_folder, out)
    assert f"{N_ITEMS // SHARD - done}/{N_ITEMS // SHARD} shards computed" in r.stdout
    _assert_same_features(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2])
def test_sigkill_leaves_nothing_that_blocks_or_poisons_the_rerun(digit_folder, reference, tmp_path, seed):
    out = tmp_path / "f"
    rc, _, _ = _interrupt(digit_folder, out, signal.SIGKILL, seed)
    assert rc == -signal.SIGKILL
    done = _shards(out)
    assert 1 <= len(done) < N_ITEMS // SHARD, "the signal did not land mid-run"
    assert (out.parent / "f.lock").exists()  # the stale lock file is still there: it must not block
    # What a kill in the middle of a write leaves: a temp file beside the target (atomic_write's naming);
    # and, worse, a torn shard under its final name (e.g. copied by a tool that does not write atomically).
    (out / f".shard-{len(done):05d}.safetensors.k1ll3d.tmp").write_bytes(b"half a shard")
    torn = out / done[0]
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    _rerun(digit_folder, out)
    _assert_same_features(out, reference)
