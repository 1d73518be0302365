"""Data: the `Dataset` record, loaders (image folders, text tables, arrays, bundled sets) and splits."""

from transferkit.data.dataset import Dataset
from transferkit.data.loaders import from_arrays, load_data, load_image_folder, load_table
from transferkit.data.splits import Split, stratified_sample, stratified_split

__all__ = [
    "Dataset",
    "Split",
    "from_arrays",
    "load_data",
    "load_image_folder",
    "load_table",
    "stratified_sample",
    "stratified_split",
]
