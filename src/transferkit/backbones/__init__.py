"""Pretrained backbones behind one interface; `load_backbone(spec)` picks the adapter.

The names below are imported on first use (PEP 562): `transferkit.backbones.stamps`, which answers a backbone's
identity from its record, is reachable without importing torch, so a cached re-extract does not pay for it."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"Backbone": "base", "Block": "base", "BUILD_OPTIONS": "registry", "DEFAULT_IMAGE": "registry",
          "DEFAULT_TEXT": "registry", "build_options": "registry", "load_backbone": "registry",
          "offline_backbones": "registry", "sources": "registry"}

__all__ = ["BUILD_OPTIONS", "Backbone", "Block", "DEFAULT_IMAGE", "DEFAULT_TEXT", "build_options", "load_backbone",
           "offline_backbones", "sources"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
