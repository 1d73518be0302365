"""Bundled real data sets: `transferkit.datasets.available()` lists them, `load(name)` returns a Dataset."""

from transferkit.data.datasets import DatasetInfo, available, load, names

__all__ = ["DatasetInfo", "available", "load", "names"]
