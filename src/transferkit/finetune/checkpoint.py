"""Run folders and resumable training state, as safetensors + JSON only (no pickles anywhere).

    run/run.json              what was trained: backbone, task, classes, config, metrics, status
    run/model.safetensors     the best weights that differ from the pretrained backbone
    run/history.json|.csv     one row per epoch
    run/state/                resume state while the run is unfinished (removed when it completes):
        trainer.json          step, epoch, position in the epoch, optimizer/scheduler structure, best so far;
                              written last, so it only ever names files that are complete
        weights-STEP.safetensors, optimizer-STEP.safetensors, rng-STEP-rankR.safetensors, best-STEP.safetensors
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.finetune.config import FinetuneError
from transferkit.io import atomic_write, read_json, write_json

RUN_FILE = "run.json"
MODEL_FILE = "model.safetensors"
STATE_DIR = "state"
TRAINER_FILE = "trainer.json"
FORMAT_VERSION = 1


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write CPU copies of `tensors` as safetensors."""
    from safetensors.torch import save_file

    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(clean, str(p), metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (refusing anything else: a pickle renamed .safetensors fails to parse)."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 — safetensors raises several types for a bad header
        raise FinetuneError(f"{path} is not a readable safetensors file ({e}); the run folder is damaged") from e


def model_tensors(model: nn.Module, names: set[str]) -> dict[str, torch.Tensor]:
    """The parameters named in `names` plus every buffer (running statistics change in training)."""
    out = {n: p for n, p in model.named_parameters() if n in names}
    out.update({n: b for n, b in model.named_buffers() if b is not None})
    return out


def load_model_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Copy saved tensors into `model` by name; every saved name must exist with the same shape."""
    own = dict(model.named_parameters())
    own.update(dict(model.named_buffers()))
    missing = [n for n in tensors if n not in own]
    if missing:
        raise FinetuneError(f"{where} holds weights the model does not have ({missing[:3]}…): the run folder "
                            "does not match its run.json")
    with torch.no_grad():
        for n, t in tensors.items():
            if own[n].shape != t.shape:
                raise FinetuneError(f"{where}: {n} has shape {tuple(t.shape)}, the model expects {tuple(own[n].shape)}")
            own[n].copy_(t.to(own[n].device, own[n].dtype))


def optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and the JSON-able rest."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_json: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        entry = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v
                entry[k] = {"tensor": f"{idx}.{k}"}
            else:
                entry[k] = v
        state_json[str(idx)] = entry
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"state": state_json, "param_groups": groups}


def optimizer_from_files(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], structure: dict) -> None:
    """Inverse of `optimizer_to_files`."""
    state = {}
    for idx, entry in structure["state"].items():
        state[int(idx)] = {k: (tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v)
                           for k, v in entry.items()}
    opt.load_state_dict({"state": state, "param_groups": structure["param_groups"]})


def rng_tensors() -> dict[str, torch.Tensor]:
    """This process's torch RNG states (CPU and, when present, CUDA)."""
    out = {"cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of `rng_tensors`."""
    torch.random.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


class RunFolder:
    """Paths and JSON of one run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.state = self.path / STATE_DIR

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    def exists(self) -> bool:
        return self.run_file.exists()

    def read(self) -> dict:
        """run.json, checked to be a transferkit run of a version this code reads."""
        if not self.run_file.exists():
            raise FinetuneError(f"{self.path} is not a transferkit run folder (no {RUN_FILE}): give the --out folder "
                                "of a finished `transferkit finetune`")
        try:
            info = read_json(self.run_file)
        except ValueError as e:
            raise FinetuneError(f"{self.run_file} is not valid JSON ({e}); the run folder is damaged") from e
        if not isinstance(info, dict) or info.get("format") != FORMAT_VERSION:
            raise FinetuneError(f"{self.run_file} is not a run of format {FORMAT_VERSION}: written by another version")
        return info

    def write(self, info: dict) -> None:
        write_json(self.run_file, {**info, "format": FORMAT_VERSION})

    def inside(self, name: str) -> Path:
        """`name` resolved inside the run folder; a name that escapes it (../, absolute) is refused."""
        p = (self.path / name).resolve()
        root = self.path.resolve()
        if p != root and root not in p.parents:
            raise FinetuneError(f"{self.run_file} names {name!r}, outside the run folder: refusing to read it")
        return p

    def write_history(self, history: list[dict]) -> None:
        write_json(self.path / "history.json", history)
        if not history:
            return
        cols = list(dict.fromkeys(k for row in history for k in row))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        w.writerows(history)
        atomic_write(self.path / "history.csv", lambda p: p.write_text(buf.getvalue(), encoding="utf-8"))

    # ---- resume state -------------------------------------------------------------------------

    def read_trainer(self) -> dict | None:
        f = self.state / TRAINER_FILE
        return read_json(f) if f.exists() else None

    def save_rng(self, step: int, rank: int) -> None:
        """Each process writes its own RNG state for a resume point (before the main process's `save_state`)."""
        self.state.mkdir(parents=True, exist_ok=True)
        save_tensors(self.state / f"rng-{step:08d}-rank{rank}.safetensors", rng_tensors())

    def save_state(self, *, step: int, trainer: dict, weights: dict[str, torch.Tensor],
                   optimizer: torch.optim.Optimizer, best: dict[str, torch.Tensor] | None) -> None:
        """Write one resume point: data files first, then trainer.json naming them, then drop older files."""
        self.state.mkdir(parents=True, exist_ok=True)
        tag = f"{step:08d}"
        opt_tensors, opt_json = optimizer_to_files(optimizer)
        save_tensors(self.state / f"weights-{tag}.safetensors", weights)
        save_tensors(self.state / f"optimizer-{tag}.safetensors", opt_tensors)
        files = {"weights": f"weights-{tag}.safetensors", "optimizer": f"optimizer-{tag}.safetensors",
                 "rng": f"rng-{tag}-rank{{rank}}.safetensors"}
        if best is not None:
            save_tensors(self.state / f"best-{tag}.safetensors", best)
            files["best"] = f"best-{tag}.safetensors"
        elif trainer.get("files", {}).get("best"):
            files["best"] = trainer["files"]["best"]
        write_json(self.state / TRAINER_FILE, {**trainer, "step": step, "files": files, "optimizer": opt_json})
        for f in self.state.iterdir():
            if f.name != TRAINER_FILE and f"-{tag}" not in f.name and f.name != files.get("best"):
                f.unlink(missing_ok=True)

    def load_state(self, trainer: dict, rank: int) -> dict[str, Any]:
        """The tensors a trainer.json names: weights, optimizer, this rank's RNG, best weights (if any)."""
        files = trainer["files"]
        out: dict[str, Any] = {
            "weights": load_tensors(self.inside(f"{STATE_DIR}/{files['weights']}")),
            "optimizer": load_tensors(self.inside(f"{STATE_DIR}/{files['optimizer']}")),
        }
        rng_file = self.inside(f"{STATE_DIR}/{files['rng'].format(rank=rank)}")
        out["rng"] = load_tensors(rng_file) if rng_file.exists() else None
        out["best"] = load_tensors(self.inside(f"{STATE_DIR}/{files['best']}")) if files.get("best") else None
        return out

