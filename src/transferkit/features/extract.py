"""The extraction loop: run a frozen backbone over a data set once, shard by shard, into the feature store.

A second run with the same key does no model work; an interrupted run resumes at the first missing
shard; memory is bounded by a shard, not by the data set. Launched as several processes (torchrun or
`accelerate launch`, one node or many, on a path they share), the processes split the missing shards between
them and write one feature set, byte for byte the one a single process writes (`_extract_parallel`).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transferkit.backbones.base import Backbone
from transferkit.data.dataset import Dataset
from transferkit.errors import DataError, FeatureStoreError
from transferkit.features.inference import InferenceRunner, choose_optimization
from transferkit.features.store import FeatureSet, FeatureStore, feature_key, shard_name
from transferkit.runtime import release_free_memory, resolve_precision, tune_allocator


class _Items(torch.utils.data.Dataset):
    """Index -> raw item, so DataLoader workers can read and preprocess in parallel."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


def _batches(data: Dataset, start: int, stop: int, batch_size: int) -> list[list[int]]:
    """Index batches for one shard; text is sorted by length so batches carry little padding."""
    return plan_batches(data.items, data.modality, batch_size, start, stop)


def plan_batches(items: Sequence[Any], modality: str, batch_size: int, start: int = 0,
                 stop: int | None = None) -> list[list[int]]:
    """Index batches of items[start:stop]; text sorted by length (stable) so batches carry little padding."""
    idx = list(range(start, len(items) if stop is None else stop))
    if modality == "text":
        idx.sort(key=lambda i: len(items[i]))
    return [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]


def embed_items(backbone: Backbone, items: Sequence[Any], *, batch_size: int = 64, precision: str = "auto",
                shard_size: int = 1024, optimize: str = "auto", progress: bool = False) -> np.ndarray:
    """Features (N, D) of raw items, computed the way extraction computes them — the same batches (text sorted
    by length within each shard), precision policy, memory layout, graph capture rule and inference runner —
    but without the store: what a model folder predicts from. The same items give the same features as
    `extract_features` with the same batch and shard sizes."""
    if batch_size < 1 or shard_size < 1:
        raise DataError(f"batch_size ({batch_size}) and shard_size ({shard_size}) must be at least 1")
    prec = resolve_precision(precision, backbone, inference=True)
    if backbone.device.type == "cpu":
        tune_allocator()
    runner = InferenceRunner(backbone, prec, choose_optimization(optimize, backbone, prec))
    out = np.empty((len(items), backbone.feature_dim), np.float32)
    plan = [b for start in range(0, len(items), shard_size)
            for b in plan_batches(items, backbone.modality, batch_size, start, min(start + shard_size, len(items)))]
    bar = tqdm(total=len(items), desc=f"embed {backbone.spec}", unit="item", disable=not progress, leave=False)
    try:
        for idx in plan:
            out[np.asarray(idx)] = runner(backbone.collate([items[i] for i in idx]))
            bar.update(len(idx))
    finally:
        bar.close()
    return out


def prefetched(collate: Callable[[list], Any], items: Sequence[Any], batches: Iterable[list[int]]) -> Iterator[Any]:
    """collate(items of each batch), in order, each one made in a thread while the model runs the one before.

    Without DataLoader workers (in-memory items), preprocessing otherwise waits for the model and the model for
    preprocessing; PIL's resizing, numpy and the Rust tokenizers release the GIL, so the two overlap. Measured on
    2 cores (256 in-memory images at 224 px, bf16): ViT-S/16 +3 %, efficientnet_b0 +6 % images/s. A batch that
    fails to collate raises here, where the loop would have. `batches` may be a generator: it is advanced one batch
    ahead, in the caller's thread."""
    def make(idx: list[int]) -> Any:  # the items are read in the thread too (a lazy container may decode them)
        return collate([items[i] for i in idx])

    order = iter(batches)
    with ThreadPoolExecutor(1, thread_name_prefix="transferkit-collate") as pool:
        first = next(order, None)
        ahead: Future | None = pool.submit(make, first) if first is not None else None
        while ahead is not None:
            batch = ahead.result()
            following = next(order, None)
            ahead = pool.submit(make, following) if following is not None else None
            yield batch


def default_workers(data: Dataset) -> int:
    """DataLoader workers: file images are decoded in parallel; in-memory items need none."""
    if data.modality != "image" or len(data.items) == 0 or not isinstance(data.items[0], (str, Path)):
        return 0
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def extract_features(
    backbone: Backbone,
    data: Dataset,
    *,
    out: str | Path | None = None,
    store: FeatureStore | None = None,
    batch_size: int = 64,
    shard_size: int = 1024,
    num_workers: int | None = None,
    precision: str = "auto",
    optimize: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
    on_shard: Callable[[int], None] | None = None,
    store_dtype: str = "float32",
) -> FeatureSet:
    """Features of `data` under `backbone`, computed only where not already on disk.

    out: the feature-set folder; when None, the set lives in `store` (default cache) under its key.
    precision: "fp32", "bf16" or "auto" (bf16 only where the hardware runs it natively); "int8" quantises the
        linear layers dynamically (CPU, opt-in: see `inference.quantised_linear`).
    optimize: "none", "jit" (frozen TorchScript graph), "compile" (Inductor, asked for only) or "auto" (see
        `choose_optimization`).
    on_shard: called with each shard index after it is written (progress hooks, tests).
    store_dtype: "float32" or "float16" (half the disk, and half the memory read with `features(np.float16)`; keyed
        apart from float32 features).
    """
    if batch_size < 1 or shard_size < 1:
        raise DataError(f"batch_size ({batch_size}) and shard_size ({shard_size}) must be at least 1")
    if data.modality != backbone.modality:
        raise DataError(f"{backbone.spec} reads {backbone.modality} items but data {data.name!r} holds "
                        f"{data.modality}: pick a {data.modality} backbone")
    prec = resolve_precision(precision, backbone, inference=True)
    if backbone.device.type == "cpu":
        tune_allocator()
    key = feature_key(backbone.identity(), data.fingerprint, prec, store_dtype)  # refuses an unknown store dtype
    folder = Path(out) if out is not None else (store or FeatureStore()).path_for(key)
    n_shards = (len(data) + shard_size - 1) // shard_size
    meta = {
        "key": key,
        "backbone": backbone.identity(),
        "build": dict(backbone.build),  # how to build the backbone again (not part of the key)
        "precision": prec,
        "data": {"name": data.name, "fingerprint": data.fingerprint, "modality": data.modality,
                 "task": data.task, "class_names": list(data.class_names), "meta": _jsonable(data.meta),
                 "skipped": list(data.meta.get("skipped") or [])},
        "n_items": len(data),
        "feature_dim": backbone.feature_dim,
        "shard_size": shard_size,
        "n_shards": n_shards,
        "store_dtype": store_dtype,
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    args = (backbone, data, batch_size, num_workers, prec, optimize, on_shard)
    group = process_group()
    if group is not None:
        return _extract_parallel(folder, meta, data, overwrite, group, progress, args)
    with FileLock(str(folder) + ".lock"):
        fs, todo = _prepare(folder, meta, data, overwrite)
        if fs.complete:
            return fs
        t0 = time.perf_counter()
        _compute(fs, todo, progress, *args)
        _finish(fs, todo, t0, processes=1)
    return fs


def process_group() -> tuple[int, int] | None:
    """(rank, world size) when this process is one of several launched by torchrun or `accelerate launch`
    (WORLD_SIZE > 1): the process group is initialised through Accelerate (gloo on CPU, NCCL on CUDA) if it is not
    yet; None in a plain single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState()
    return dist.get_rank(), dist.get_world_size()


def _prepare(folder: Path, meta: dict, data: Dataset, overwrite: bool) -> tuple[FeatureSet, list[int]]:
    """Under the folder's lock: the feature set (created, or the unfinished one resumed) and its missing shards;
    temp files of dead writers and torn shards are removed, so they are computed again."""
    fs = FeatureSet.create(folder, meta, data.labels, overwrite=overwrite)
    if fs.complete:
        return fs, []
    fs.remove_temp_files()  # we hold the lock: any temp file is a dead writer's
    done = set()
    for i in fs.done_shards():
        if fs.shard_intact(i):
            done.add(i)
        else:  # torn or foreign: never count it as finished
            (folder / shard_name(i)).unlink(missing_ok=True)
    return fs, [i for i in range(fs.meta["n_shards"]) if i not in done]


def _finish(fs: FeatureSet, todo: list[int], t0: float, processes: int) -> None:
    """Mark the set complete with what this run computed: seconds, shards, items and processes."""
    fs.mark_complete(extract_seconds=round(time.perf_counter() - t0, 3), shards_computed=len(todo),
                     items_computed=sum(fs.shard_bounds(i)[1] - fs.shard_bounds(i)[0] for i in todo),
                     processes=processes)


def _compute(fs: FeatureSet, todo: list[int], progress: bool, backbone: Backbone, data: Dataset, batch_size: int,
             num_workers: int | None, prec: str, optimize: str, on_shard: Callable[[int], None] | None) -> None:
    if todo:
        opt = choose_optimization(optimize, backbone, prec)
        _run(backbone, data, fs, todo, batch_size, num_workers, InferenceRunner(backbone, prec, opt), progress,
             on_shard)


def _extract_parallel(folder: Path, meta: dict, data: Dataset, overwrite: bool, group: tuple[int, int],
                      progress: bool, args: tuple) -> FeatureSet:
    """One of `world` processes extracting into one feature set on a shared path.

    Rank 0 holds the folder's lock for the whole job (another job waits, as for a single process), prepares the set
    and tells every rank the missing shards; rank r computes every world-th of them from the r-th, with the same
    batches, precision and graph rule as one process, so each shard's bytes are those a single process writes.
    Every rank reports success or failure to all; only when all succeeded does rank 0 mark the set complete, and
    a failed or killed rank's shards are simply missing: the next run (with any number of processes) redoes them.
    """
    import torch.distributed as dist

    rank, world = group
    lock = FileLock(str(folder) + ".lock")
    if rank == 0:
        lock.acquire()
    try:
        state: list[Any] = [None]
        failure: BaseException | None = None
        if rank == 0:
            try:
                fs, todo = _prepare(folder, meta, data, overwrite)
                state = [{"todo": todo, "complete": fs.complete}]
            except Exception as e:  # every rank must hear of it, or the others wait for ever
                failure, state = e, [{"error": f"{type(e).__name__}: {e}"}]
        dist.broadcast_object_list(state, src=0)
        if failure is not None:
            raise failure
        if "error" in state[0]:
            raise FeatureStoreError(f"process 0 could not prepare {folder}: {state[0]['error']}")
        fs = FeatureSet.open(folder, require_complete=False)
        if state[0]["complete"]:
            return fs
        todo, t0 = state[0]["todo"], time.perf_counter()
        mine = todo[rank::world]
        try:
            _compute(fs, mine, progress and rank == 0, *args)
        except BaseException as e:  # noqa: BLE001 — reported to every rank below, then raised again
            failure = e
        failures: list[Any] = [None] * world
        dist.all_gather_object(failures, None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        bad = [f"process {r}: {f}" for r, f in enumerate(failures) if f is not None]
        if bad:
            raise FeatureStoreError(f"extraction into {folder} failed in {'; '.join(bad)}; the shards written are "
                                    "kept: rerun the same extract to finish")
        if rank == 0:
            _finish(fs, todo, t0, processes=world)
        dist.barrier()
    finally:
        if rank == 0:
            lock.release()
    return FeatureSet.open(folder)


def _run(backbone: Backbone, data: Dataset, fs: FeatureSet, todo: list[int], batch_size: int,
         num_workers: int | None, runner: InferenceRunner, progress: bool,
         on_shard: Callable[[int], None] | None) -> None:
    """Compute and write the shards in `todo`. Each shard's batches are planned when the loader reaches it, so
    memory does not grow with the data set (a streamed table is read in order, once)."""
    if not todo:
        return
    workers = default_workers(data) if num_workers is None else num_workers
    planned: deque[tuple[int, list[int]]] = deque()  # the batches handed to the loader and not yet back from it
    window: dict[int, Any] = {}  # without workers: the items of the shard being planned and of the one before

    def plan() -> Iterator[list[int]]:
        for s in todo:
            start, stop = fs.shard_bounds(s)
            if workers:  # DataLoader workers read the items themselves, by index
                batches = _batches(data, start, stop, batch_size)
            else:  # read once, in order: a streamed table reads on from where it is
                rows = data.items[start:stop]
                for i in [i for i in window if i < start - (stop - start)]:  # the prefetch is one batch ahead
                    del window[i]
                window.update(zip(range(start, stop), rows, strict=True))
                batches = [[start + j for j in b] for b in plan_batches(rows, data.modality, batch_size)]
            for b in batches:
                planned.append((s, b))
                yield b

    loader = (DataLoader(_Items(data.items), batch_sampler=plan(), collate_fn=backbone.collate,
                         num_workers=workers, persistent_workers=False, prefetch_factor=4)
              if workers else prefetched(backbone.collate, window, plan()))
    total = sum(stop - start for start, stop in map(fs.shard_bounds, todo))
    delay = shard_delay()
    bar = tqdm(total=total, desc=f"extract {backbone.spec}", unit="item", disable=not progress, leave=False)
    pending: dict[int, np.ndarray] = {}
    filled: dict[int, int] = {}
    try:
        for batch in loader:
            shard, idx = planned.popleft()
            feats = runner(batch)
            if not np.isfinite(feats).all():
                raise FeatureStoreError(f"{backbone.spec} produced NaN/inf features for items {idx[:3]}…: "
                                        "try --precision fp32")
            start, stop = fs.shard_bounds(shard)
            buf = pending.setdefault(shard, np.empty((stop - start, backbone.feature_dim), np.float32))
            buf[np.asarray(idx) - start] = feats
            filled[shard] = filled.get(shard, 0) + len(idx)
            bar.update(len(idx))
            if filled[shard] == stop - start:
                fs.write_shard(shard, pending.pop(shard))
                release_free_memory()  # keeps RSS flat: freed batch tensors otherwise stay in glibc's heap
                if on_shard is not None:
                    on_shard(shard)
                if delay:
                    time.sleep(delay)
    finally:
        bar.close()
        close = getattr(loader, "close", None)
        if close is not None:  # a stopped prefetch lets its thread go now, not when the traceback is freed
            close()
    if pending:
        raise FeatureStoreError(f"extraction ended with unfinished shards {sorted(pending)}: rerun to finish")


def shard_delay() -> float:
    """Seconds to pause after each shard, from $TRANSFERKIT_SHARD_DELAY (default 0): a documented testing aid
    (docs/reference.md) that keeps an extraction running long enough for a test to interrupt it mid-way on any
    machine, however fast or loaded."""
    try:
        return max(0.0, float(os.environ.get("TRANSFERKIT_SHARD_DELAY", "0") or 0))
    except ValueError:
        raise DataError(f"TRANSFERKIT_SHARD_DELAY={os.environ['TRANSFERKIT_SHARD_DELAY']!r} is not a number of "
                        "seconds: unset it or give e.g. 0.2") from None


def _jsonable(meta: dict) -> dict:
    """The JSON-friendly part of a data set's meta (arrays are left out)."""
    return {k: v for k, v in meta.items() if k != "skipped" and isinstance(v, (str, int, float, bool, list)) and not
            (isinstance(v, list) and len(v) > 100)}

