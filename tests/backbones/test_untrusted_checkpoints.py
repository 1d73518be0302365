"""Weight files a user hands in: pickles are refused unless trusted, and never run code even when trusted.

Each test crafts a real malicious pickle — an object whose ``__reduce__`` makes the unpickler call
``open(marker, "w")`` — and checks that loading is refused and that the marker file never appears.
"""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from transferkit.backbones import load_backbone
from transferkit.backbones.checkpoint import UntrustedCheckpointError
from transferkit.errors import HeadError, TransferkitError, WeightsNotFoundError


class _Evil:
    """Unpickling this calls open(marker, "w"): proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_file(path, marker, how="pickle"):
    """Write a malicious checkpoint: a plain pickle, or torch.save's zip format (what .pt/.pth usually are)."""
    payload = {"state_dict": {"weight": _Evil(marker)}}
    if how == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    return path


def _one_line(e: Exception) -> str:
    assert isinstance(e, TransferkitError) and "\n" not in str(e)
    return str(e)


@pytest.mark.parametrize(("name", "how"), [("evil.pt", "pickle"), ("evil.pth", "torch"), ("evil.ckpt", "torch"),
                                           ("evil.bin", "pickle"), ("weights", "torch")])
def test_timm_weights_pickle_is_refused_without_trust(tmp_path, name, how):
    marker = tmp_path / "pwned"
    evil = _evil_file(tmp_path / name, marker, how)
    with pytest.raises(UntrustedCheckpointError) as info:
        load_backbone("timm:test_resnet", pretrained=False, weights=str(evil), image_size=32)
    msg = _one_line(info.value)
    assert str(evil) in msg and "execute code" in msg and "--trust-pickle" in msg and "safetensors" in msg
    assert not marker.exists()


@pytest.mark.parametrize("how", ["pickle", "torch"])
def test_trusted_pickle_still_goes_through_weights_only_loading(tmp_path, how):
    marker = tmp_path / "pwned"
    evil = _evil_file(tmp_path / "evil.pth", marker, how)
    with pytest.raises(WeightsNotFoundError, match="cannot read weights file") as info:
        load_backbone("timm:test_resnet", pretrained=False, weights=str(evil), image_size=32, trust_pickle=True)
    _one_line(info.value)
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil_file(tmp_path / "evil.safetensors", marker, "torch")
    with pytest.raises(WeightsNotFoundError, match="cannot read weights file"):
        load_backbone("timm:test_resnet", pretrained=False, weights=str(evil), image_size=32)
    assert not marker.exists()


def test_timm_weights_load_from_safetensors_and_from_trusted_pth(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    ref = load_backbone("timm:test_resnet", pretrained=False, image_size=32)
    state = {k: v.contiguous() for k, v in ref.model.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    torch.manual_seed(2)
    from_safe = load_backbone("timm:test_resnet", weights=str(tmp_path / "w.safetensors"), image_size=32)
    from_pth = load_backbone("timm:test_resnet", weights=str(tmp_path / "w.pth"), image_size=32, trust_pickle=True)
    imgs = [np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    np.testing.assert_allclose(from_safe.embed(imgs), ref.embed(imgs), atol=1e-5)
    np.testing.assert_allclose(from_pth.embed(imgs), ref.embed(imgs), atol=1e-5)
    with pytest.raises(UntrustedCheckpointError):
        load_backbone("timm:test_resnet", weights=str(tmp_path / "w.pth"), image_size=32)


@pytest.fixture(scope="module")
def evil_hf_folder(tmp_path_factory, minilm):
    """A tiny BERT folder whose only weights are a malicious pytorch_model.bin (config and tokenizer are real)."""
    from transformers import AutoTokenizer, BertConfig

    folder = tmp_path_factory.mktemp("evil-bert")
    tok = AutoTokenizer.from_pretrained(minilm.info["folder"])
    BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64).save_pretrained(folder)
    tok.save_pretrained(folder)
    _evil_file(folder / "pytorch_model.bin", folder.parent / f"{folder.name}-pwned", "torch")
    return folder


def test_hf_folder_with_only_pickled_weights_is_refused(evil_hf_folder):
    marker = evil_hf_folder.parent / f"{evil_hf_folder.name}-pwned"
    with pytest.raises(UntrustedCheckpointError) as info:
        load_backbone(f"hf:{evil_hf_folder}")
    assert "pytorch_model.bin" in _one_line(info.value) and "--trust-pickle" in str(info.value)
    with pytest.raises(TransferkitError):  # trusted: transformers reads it with weights_only, which blocks `open`
        load_backbone(f"hf:{evil_hf_folder}", trust_pickle=True)
    assert not marker.exists()


def test_hf_loading_defaults_keep_remote_code_off_and_prefer_safetensors(monkeypatch, tmp_path):
    """What hf.py hands transformers by default: trust_remote_code=False and use_safetensors=True."""
    import transformers

    from transferkit.backbones import hf

    seen = {}

    def spy(ident, **kw):
        seen.update(kw)
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda ident, **kw: object())
    with pytest.raises(WeightsNotFoundError):
        hf._from_pretrained("hf:x", str(tmp_path), pretrained=True, trust_remote_code=False)
    assert seen == {"trust_remote_code": False, "use_safetensors": True}


def test_cli_extract_refuses_a_pickled_model_in_one_line(evil_hf_folder, tmp_path):
    marker = evil_hf_folder.parent / f"{evil_hf_folder.name}-pwned"
    table = tmp_path / "t.csv"
    table.write_text("text,label\nhello,a\nworld,b\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "transferkit.cli", "extract", "--model", f"hf:{evil_hf_folder}",
                        "--data", str(table), "--label-column", "label", "--out", str(tmp_path / "f")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "refusing to load" in r.stderr and "--trust-pickle" in r.stderr
    assert not marker.exists() and not (tmp_path / "f" / "meta.json").exists()


def test_st_modules_json_cannot_point_outside_the_model_folder(tmp_path, minilm):
    import shutil

    folder = tmp_path / "st-model"
    shutil.copytree(minilm.info["folder"], folder)
    modules = json.loads((folder / "modules.json").read_text())
    for m in modules:
        if m["type"].endswith("Pooling"):
            m["path"] = "../../../../etc"
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(WeightsNotFoundError, match="outside the model folder") as info:
        load_backbone(f"st:{folder}")
    _one_line(info.value)


def test_load_head_refuses_pickles_without_running_them(tmp_path):
    from transferkit.heads import fit_head, load_head, save_head

    marker = tmp_path / "pwned"
    pickled = tmp_path / "pickled-head"
    pickled.mkdir()
    _evil_file(pickled / "head.pkl", marker)
    with pytest.raises(HeadError, match="head.pkl, a pickle") as info:
        load_head(pickled)
    _one_line(info.value)

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), np.arange(40) % 2
    disguised = save_head(fit_head("ridge", X[:30], y[:30], X[30:], y[30:]), tmp_path / "disguised")
    _evil_file(disguised / "arrays.safetensors", marker, "torch")  # a pickle under the safetensors name
    with pytest.raises(HeadError, match="cannot read saved head"):
        load_head(disguised)
    assert not marker.exists()
