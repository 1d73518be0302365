"""User-supplied weight files: safetensors load freely; pickle-based files (.pt/.pth/.bin/.ckpt) only when trusted.

Unpickling runs whatever code the file names, so a checkpoint someone hands you can act as a program.
A pickle is refused unless the caller passes `trust_pickle=True` (`--trust-pickle`), and even then it
goes through `torch.load(weights_only=True)`, the restricted unpickler that only rebuilds tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from transferkit.errors import TransferkitError, WeightsNotFoundError

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")


class UntrustedCheckpointError(TransferkitError):
    """A pickle-based weight file was handed in without `trust_pickle`."""


def refuse_pickle(path: str | Path, what: str = "weights file") -> UntrustedCheckpointError:
    """The one-line error for a pickle handed in without trust: why, and the two ways out."""
    return UntrustedCheckpointError(
        f"refusing to load {what} {path}: it is a pickle, and unpickling a file can execute code; "
        "if you trust its source pass --trust-pickle (trust_pickle=True), or convert it to .safetensors"
    )


def check_weights_file(path: str | Path, *, trust_pickle: bool = False, what: str = "weights file") -> Path:
    """`path` as a Path once it is known safe to read: an existing .safetensors file, or a trusted pickle."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"{what} {path} does not exist (or is not a file): check the path")
    suffix = path.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        return path
    if suffix in PICKLE_SUFFIXES or _looks_like_pickle(path):
        if not trust_pickle:
            raise refuse_pickle(path, what)
        return path
    raise WeightsNotFoundError(f"{what} {path} has unknown extension {suffix or '(none)'!r}: "
                               f"give a .safetensors file (or, trusted, one of {', '.join(PICKLE_SUFFIXES)})")


def _looks_like_pickle(path: Path) -> bool:
    """Pickle protocol 2+ starts with 0x80; torch's zip format starts with PK. Both can carry code."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head[:1] == b"\x80" or head == b"PK"


def read_state_dict(path: str | Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A state dict (name -> tensor) from a .safetensors file, or from a trusted pickle via weights_only loading.

    Training checkpoints that wrap the weights (`state_dict`, `model`, `state_dict_ema`) are unwrapped and
    a DataParallel `module.` prefix is dropped.
    """
    path = check_weights_file(path, trust_pickle=trust_pickle)
    try:
        if path.suffix.lower() in SAFE_SUFFIXES:
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)  # restricted unpickler: tensors only
    except Exception as e:  # noqa: BLE001 — safetensors/unpickler errors vary; all mean "not a weights file"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise WeightsNotFoundError(f"cannot read weights file {path}: {first}") from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsNotFoundError(f"weights file {path} holds no state dict (name -> tensor)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def pickle_only_folder(folder: Path) -> list[Path]:
    """Weight files of a model folder when they are all pickles (no .safetensors beside them), else []."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file()]
    if any(p.suffix.lower() in SAFE_SUFFIXES for p in files):
        return []
    return sorted(p for p in files if p.suffix.lower() in (".bin", ".pt", ".pth", ".ckpt"))
