"""One check that the data-parallel tests of fine-tuning and of end-to-end adaptation share."""

import pytest
import torch

from transferkit.finetune.checkpoint import load_tensors
from transferkit.io import read_json


def assert_same_run(one, two, processes: int = 2) -> tuple[dict, dict]:
    """The run folders `one` (one process) and `two` (`processes` processes) report the same validation and test
    metrics and hold the same weights (fp32 tolerance); returns both run.json records."""
    info_one, info_two = read_json(one / "run.json"), read_json(two / "run.json")
    assert (info_one["processes"], info_two["processes"]) == (1, processes)
    for part in ("val", "test"):
        assert info_two["metrics"][part] == pytest.approx(info_one["metrics"][part])
    a, b = load_tensors(one / "model.safetensors"), load_tensors(two / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    return info_one, info_two
