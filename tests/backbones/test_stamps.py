"""A backbone's identity known without building it, from the record of an earlier build from the same files."""

import json
import os
import shutil

import pytest

from transferkit.backbones import base, load_backbone
from transferkit.backbones.files import st_bundled_folder
from transferkit.backbones.stamps import known_identity, stamp
from transferkit.runtime import cache_dir


@pytest.fixture
def minilm_copy(tmp_path, monkeypatch):
    """A private copy of the bundled MiniLM folder (its files can be touched) and a private cache."""
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "minilm"
    shutil.copytree(st_bundled_folder("all-MiniLM-L6-v2"), folder)
    return folder


def test_a_build_records_its_identity_and_the_next_build_reuses_the_digest(minilm_copy, monkeypatch):
    spec = f"st:{minilm_copy}"
    assert known_identity(spec) is None  # never built from these files
    bb = load_backbone(spec)
    assert known_identity(spec) == json.loads(json.dumps(bb.identity()))
    hashed = []
    real = base.Backbone.weights_digest
    monkeypatch.setattr(base.Backbone, "weights_digest", lambda self: hashed.append(self._digest) or real(self))
    again = load_backbone(spec)
    assert not hashed  # the build took the recorded digest: weights_digest was never asked to hash
    assert again.weights_digest() == bb.weights_digest()


def test_other_files_or_other_options_mean_another_stamp(minilm_copy):
    spec = f"st:{minilm_copy}"
    load_backbone(spec)
    assert known_identity(spec) is not None
    assert known_identity(spec, pooling="cls") is None and known_identity(spec, max_length=64) is None
    weights = minilm_copy / "model.safetensors"
    st_ = os.stat(weights)
    os.utime(weights, ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))  # rewritten in place, say
    assert known_identity(spec) is None


def test_random_weights_and_sources_that_cannot_name_their_files_have_no_stamp():
    assert stamp("effnet:lite0", {"pretrained": False, "pooling": "default", "image_size": None}) is None
    assert stamp("tv:resnet18", {"pretrained": True, "pooling": "default", "image_size": None}) is None
    assert known_identity("effnet:lite0", pretrained=False) is None


def test_a_record_that_disagrees_with_the_build_is_not_trusted(minilm_copy):
    spec = f"st:{minilm_copy}"
    bb = load_backbone(spec)
    (record,) = (cache_dir() / "identities").glob("*.json")
    forged = {**json.loads(record.read_text()), "feature_dim": 999, "weights": "0" * 32}
    record.write_text(json.dumps(forged))
    again = load_backbone(spec)
    assert again.weights_digest() == bb.weights_digest()  # hashed again, not taken from the forged record
    assert json.loads(record.read_text())["feature_dim"] == 384  # and the record is put right
    record.write_text("{not json")
    assert known_identity(spec) is None
