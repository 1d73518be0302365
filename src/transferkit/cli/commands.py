"""Importing this module registers every command on the app (each module holds a few related commands; the
order of imports is the order of the help panels)."""

from transferkit.cli import start  # noqa: F401, I001 — first: the help lists its panel first
from transferkit.cli import features, train, adapt, experiments, ship  # noqa: F401, I001
