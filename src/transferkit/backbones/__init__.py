"""Pretrained backbones behind one interface; `load_backbone(spec)` picks the adapter."""

from transferkit.backbones.base import Backbone, Block
from transferkit.backbones.registry import DEFAULT_IMAGE, DEFAULT_TEXT, load_backbone, offline_backbones, sources

__all__ = ["Backbone", "Block", "DEFAULT_IMAGE", "DEFAULT_TEXT", "load_backbone", "offline_backbones", "sources"]
