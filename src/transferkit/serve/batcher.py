"""Micro-batching: requests that arrive together run through the model as one batch.

Each request puts its items on a queue and awaits its own result. One worker takes the first waiting request,
gathers more until `max_batch` items are together or `max_wait_ms` have passed since the first, runs the model
once on all of them (in a single worker thread: the model is never run twice at once), and hands each request
its slice. When a gathered batch fails because of one request's items, each request is run on its own, so only
the bad one gets the error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class _Job:
    items: list
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Run `predict(items) -> array` on batches gathered across concurrent requests."""

    def __init__(self, predict: Callable[[Sequence[Any]], np.ndarray], *, max_batch: int = 32,
                 max_wait_ms: float = 5.0, timeout_s: float = 300.0) -> None:
        self.predict, self.max_batch, self.max_wait = predict, max(1, int(max_batch)), max(0.0, max_wait_ms) / 1000
        self.timeout_s = timeout_s
        self.batches = 0
        self.items = 0
        self.queue: asyncio.Queue[_Job] | None = None
        self.pool: ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the worker (on the running event loop); a stopped batcher can be started again."""
        self.queue = asyncio.Queue()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferkit-model")
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Stop the worker; requests still waiting get an error instead of an answer that never comes."""
        if self._task is not None:
            self._task.cancel()
        while self.queue is not None and not self.queue.empty():
            job = self.queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, items: list) -> np.ndarray:
        """The model's outputs for `items` (raises what the model raised for them; TimeoutError past `timeout_s`)."""
        if self.queue is None or self._task is None or self._task.done():
            raise RuntimeError("the model worker is not running")
        job = _Job(items, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await asyncio.wait_for(job.future, self.timeout_s)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._gather_and_run(loop)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 — the worker must outlive any one batch; the batch's jobs got errors
                continue

    async def _gather_and_run(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take the first waiting request, gather more until the batch is full or the wait is over, run them."""
        jobs = [await self.queue.get()]
        n = len(jobs[0].items)
        deadline = jobs[0].enqueued + self.max_wait
        while n < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                job = self.queue.get_nowait() if left <= 0 else await asyncio.wait_for(self.queue.get(), left)
            except (TimeoutError, asyncio.QueueEmpty):
                break
            jobs.append(job)
            n += len(job.items)
        await self._run(loop, jobs)

    async def _run(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        items = [it for j in jobs for it in j.items]
        try:
            out = await loop.run_in_executor(self.pool, self.predict, items)
        except Exception as e:  # noqa: BLE001 — one request's bad items must not fail the others: run each alone
            if len(jobs) > 1:
                for j in jobs:
                    await self._run(loop, [j])
            elif not jobs[0].future.done():
                jobs[0].future.set_exception(e)
            return
        self.batches += 1
        self.items += len(items)
        at = 0
        for j in jobs:
            if not j.future.done():
                j.future.set_result(out[at: at + len(j.items)])
            at += len(j.items)
