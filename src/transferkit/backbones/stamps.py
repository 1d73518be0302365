"""A backbone's identity known without building it: what it was the last time it was built from the same files.

A backbone's identity (spec, weights digest, preprocessing, pooling, feature size) is the first half of every
feature key. Learning it means building the model and hashing every weight: seconds, which a cached
re-extraction spends for nothing. A source that can name the files it builds from without building (the
`files` function of its `Source`) gets a *stamp*: the spec, the build options, transferkit's and the source
library's versions, and each file's path, size and modification time. `load_backbone` records stamp -> identity
right after building, before anyone can change the weights, and on the next build from the same stamp takes the
recorded digest instead of hashing again; `known_identity` answers from the record alone, so a command whose
features are already on disk need not build the model at all.

A file rewritten in place gets a new modification time and so a new stamp. Random initialisation has no stamp
(its weights come from the random generator, not from files); nor do sources without a `files` function.
Records live in `<cache>/identities/`, one small JSON file per stamp; a record that cannot be read is ignored.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

from transferkit.io import write_json
from transferkit.runtime import cache_dir

#: identity fields a record must hold
FIELDS = ("spec", "weights", "pretrained", "preprocessing", "pooling", "feature_dim")


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def stamp(spec: str, options: dict) -> str | None:
    """The stamp of building `spec` with `options` (the loader's keyword arguments), or None when the files it
    builds from cannot be named without building."""
    from transferkit.backbones.registry import source

    prefix, _, name = spec.partition(":")
    src = source(prefix)
    if not src.files or not options.get("pretrained", True):
        return None
    module, _, function = src.files.partition(":")
    try:
        files = getattr(importlib.import_module(module), function)(name, **options)
    except Exception:  # noqa: BLE001 — no stamp is always safe: the backbone is then built and hashed
        return None
    if not files:
        return None
    described = []
    for f in sorted({Path(f).resolve() for f in files}):
        try:
            st = os.stat(f)
        except OSError:
            return None
        described.append([str(f), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"spec": spec, "options": {k: options[k] for k in sorted(options)},
                       "transferkit": _version("transferkit"), "library": [src.library, _version(src.library)],
                       "files": described}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _record(stamp_: str) -> Path:
    return cache_dir() / "identities" / f"{stamp_}.json"


def recall(stamp_: str | None) -> dict | None:
    """The identity recorded for a stamp, or None."""
    if stamp_ is None:
        return None
    try:
        identity = json.loads(_record(stamp_).read_text())
    except (OSError, ValueError):
        return None
    return identity if isinstance(identity, dict) and all(k in identity for k in FIELDS) else None


def recorded_digest(stamp_: str | None, fields: dict) -> str | None:
    """The weights digest recorded for a stamp, when the record agrees with a freshly built backbone's other
    identity fields (`Backbone.identity_fields`); else None."""
    known = recall(stamp_)
    if known is None:
        return None
    same = json.dumps({**fields, "weights": known["weights"]}, sort_keys=True, default=str) == json.dumps(
        known, sort_keys=True, default=str)
    return known["weights"] if same else None


def remember(stamp_: str | None, identity: dict) -> None:
    """Record a freshly built backbone's identity under its stamp (best effort: a read-only cache is fine)."""
    if stamp_ is None:
        return
    try:
        write_json(_record(stamp_), identity)
    except OSError:
        pass


def known_identity(spec: str, **options: Any) -> dict | None:
    """The identity `load_backbone(spec, **options)` would have, from the record of an earlier build from the same
    files, or None when there is none (then build the backbone to learn it)."""
    from transferkit.backbones.registry import loader_options

    prefix, _, name = spec.partition(":")
    try:
        opts = loader_options(spec, **options)
    except Exception:  # noqa: BLE001 — the build will raise the proper error
        return None
    return recall(stamp(spec, opts))
