"""Pretrained backbones behind one interface; `load_backbone(spec)` picks the adapter."""

from transferkit.backbones.base import Backbone, Block
from transferkit.backbones.registry import (
    BUILD_OPTIONS,
    DEFAULT_IMAGE,
    DEFAULT_TEXT,
    build_options,
    load_backbone,
    offline_backbones,
    sources,
)

__all__ = ["BUILD_OPTIONS", "Backbone", "Block", "DEFAULT_IMAGE", "DEFAULT_TEXT", "build_options", "load_backbone",
           "offline_backbones", "sources"]
