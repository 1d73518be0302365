"""Crash-safe file writes: write to a temporary file beside the target, fsync, rename over it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, fsync it, then atomically rename it to `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write `obj` as indented JSON."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    return atomic_write(path, lambda p: p.write_text(text + "\n", encoding="utf-8"))


def write_arrays(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """Atomically write numpy arrays as a safetensors file."""
    from safetensors.numpy import save_file

    clean = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    return atomic_write(path, lambda p: save_file(clean, str(p), metadata=metadata))


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read every array of a safetensors file (no pickle involved)."""
    from safetensors.numpy import load_file

    return load_file(str(path))


def inside(folder: str | Path, name: str | Path) -> Path | None:
    """`folder/name` resolved (symlinks and `..` followed) when it stays inside `folder`, else None.

    Files named by a folder's own configs (meta.json, head.json, modules.json) must not reach outside it:
    a crafted `../../etc/passwd` or a symlink to elsewhere would make a reader open files it was never given.
    """
    root = Path(folder).resolve()
    target = (root / name).resolve()
    return target if target == root or root in target.parents else None


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
