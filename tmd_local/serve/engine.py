"""The server's models: one worker thread owns the ModulePool and runs queued questions in batches.

Requests queue (bounded: a full queue refuses at once, and the app answers 429). When the worker
is free it takes the oldest job and every waiting job it can batch with it (same system, same
modules, same sampling), and runs them through the stage-batched pipeline, so each module is loaded once for
all of them. A job whose client left is dropped from its batch without stopping the others.
Results and stream events are handed back to the event loop that asked, thread-safely.

Each job is pinned at submit to the modules that answer it: the server's own, or the shipped
distilled students for a four-option TMD/DRD question when the server runs the embedded default
model (runtime/shipped.py decides which); jobs on different modules never share a batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from ..core.errors import TmdError
from ..core.memory import peak_rss_mb, rss_mb
from ..core.records import Question
from ..runtime.generation import Cancelled, GenerationSettings
from ..runtime.pipeline import Events, ModuleSet, Trace, run
from ..runtime.pool import ModulePool, Residency
from ..runtime.shipped import pick

log = logging.getLogger("tmd.serve")


class QueueFull(TmdError):
    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry in about {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(TmdError):
    """The server is stopping: the app answers 503, never a half-written reply."""

    def __init__(self):
        super().__init__("the server is shutting down; retry on another instance or later")


@dataclass(frozen=True)
class Sampling:
    """What a request may choose about generation; jobs batch together only when it is equal."""
    temperature: float = 0.0
    seed: int = 0
    max_tokens: int | None = None  # caps every stage's generation; None: the server's per-stage limits


@dataclass(eq=False)
class Job:
    system: str
    question: Question
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    result: asyncio.Future
    modules: ModuleSet | None = None  # what answers it (its label names it in the reply)
    events: asyncio.Queue | None = None  # stream events, when the client streams
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        self.cancelled.set()

    def emit(self, event: dict) -> None:
        if self.events is not None:
            self._call(self.events.put_nowait, event)

    def finish(self, trace: Trace | None = None, error: BaseException | None = None) -> None:
        def settle():
            if not self.result.done():
                if error is None:
                    self.result.set_result(trace)
                else:
                    self.result.set_exception(error)
                    self.result.exception()  # retrieved: a client that left must not log a warning
                if self.events is not None:
                    self.events.put_nowait({"event": "end"})  # after every event emitted before it
        self._call(settle)

    def _call(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the event loop is gone (server shutting down): nobody is waiting any more


@dataclass
class Metrics:
    requests: int = 0
    answered: int = 0
    refused: int = 0  # 429: queue full
    rejected: int = 0  # 4xx: bad requests, bad key
    cancelled: int = 0
    failed: int = 0
    batches: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_calls: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    latencies: deque = field(default_factory=lambda: deque(maxlen=1000))  # seconds, answered requests

    def count_rejected(self) -> None:
        self.rejected += 1

    def add_trace(self, trace: Trace) -> None:
        for name, stage in trace.stages.items():
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + stage.seconds + stage.load_seconds
            self.stage_calls[name] = self.stage_calls.get(name, 0) + stage.calls


class Engine:
    """Queue + worker thread + ModulePool. start() it once; close() cancels what is left."""

    def __init__(self, modules: ModuleSet, pool: ModulePool, *, queue_size: int = 16, max_batch: int = 16,
                 shipped: ModuleSet | None = None):
        self.modules = modules
        self.shipped = shipped  # the shipped students for four-option questions; None: `modules` answers all
        self.pool = pool
        self.queue_size = queue_size
        self.max_batch = max_batch
        self.metrics = Metrics()
        self._queue: deque[Job] = deque()
        self._running: list[Job] = []
        self._lock = threading.Condition()
        self._closing = False
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._work, name="tmd-serve-worker", daemon=True)
        self._seconds_per_question = 5.0  # refined by every batch; sizes Retry-After

    @property
    def settings(self) -> GenerationSettings:
        return self.pool.settings

    def start(self) -> None:
        self._thread.start()

    def next_id(self) -> str:
        return f"req-{next(self._ids)}"

    def modules_for(self, system: str, question: Question) -> ModuleSet:
        """The modules that answer this question when the request does not name them."""
        return pick(system, question.options, self.modules, self.shipped)

    def submit(self, system: str, question: Question, sampling: Sampling, *, stream: bool = False,
               modules: ModuleSet | None = None) -> Job:
        """Queue a job (from the event loop's thread); raises QueueFull when the queue is full.
        `modules`: what answers it (a request naming its bundle); None: modules_for decides."""
        loop = asyncio.get_running_loop()
        job = Job(system, question, sampling, loop, loop.create_future(),
                  modules or self.modules_for(system, question), asyncio.Queue() if stream else None)
        with self._lock:
            self.metrics.requests += 1
            if self._closing:
                raise ShuttingDown()
            if len(self._queue) >= self.queue_size:
                self.metrics.refused += 1
                raise QueueFull(self.retry_after())
            self._queue.append(job)
            self._lock.notify()
        return job

    def retry_after(self) -> int:
        """Seconds until the queue has likely moved: what is queued and running, at the recent pace."""
        waiting = len(self._queue) + len(self._running)
        return max(1, round(waiting * self._seconds_per_question / max(1, self.max_batch) + 0.5))

    def snapshot(self) -> dict:
        """The figures /metrics shows."""
        m = self.metrics
        with self._lock:
            queued, running = len(self._queue), len(self._running)
        latencies = sorted(m.latencies)
        return {"requests": m.requests, "answered": m.answered, "refused": m.refused,
                "rejected": m.rejected, "cancelled": m.cancelled, "failed": m.failed,
                "queue_length": queued, "running": running, "queue_size": self.queue_size,
                "batches": m.batches,
                "stage_seconds": {k: round(v, 3) for k, v in m.stage_seconds.items()},
                "stage_calls": dict(m.stage_calls),
                "latency_seconds": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95)},
                "resident_rss_mb": round(rss_mb(), 1),
                "peak_rss_mb": round(max(m.peak_rss_mb, peak_rss_mb()), 1),
                "memory_budget_mb": (round(self.pool.budget.limit_mb, 1)
                                     if self.pool.budget.limit_mb is not None else None),
                "resident_modules": self._resident(), "keep_loaded": self.pool.keep_loaded}

    def _resident(self) -> list[str]:
        try:
            return self.pool.resident
        except RuntimeError:  # the worker changed the pool while we read it; the next read is fine
            return []

    def stop_taking(self) -> None:
        """The first step of a graceful shutdown: new questions and those still queued get 503 at
        once; the batch under way runs on (abandon_running ends it when the grace is over)."""
        with self._lock:
            self._closing = True
            left = list(self._queue)
            self._queue.clear()
            self._lock.notify_all()
        self._abandon(left)

    def abandon_running(self) -> None:
        """Answer the batch under way with 503 now; the worker stops it at its next check."""
        with self._lock:
            running = list(self._running)
        self._abandon(running)

    def _abandon(self, jobs: list[Job]) -> None:
        for job in jobs:
            job.cancel()
            job.finish(error=ShuttingDown())

    def close(self) -> None:
        self.stop_taking()
        self.abandon_running()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    # --- the worker thread ---------------------------------------------------------------------
    def _work(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._run_batch(batch)
        finally:
            self.pool.close_all()

    def _next_batch(self) -> list[Job] | None:
        """The oldest live job and every waiting job that can share its batch (None: closing)."""
        with self._lock:
            while True:
                while self._queue and self._queue[0].cancelled.is_set():
                    self._drop(self._queue.popleft())
                if self._closing:
                    return None
                if self._queue:
                    break
                self._lock.wait()
            first = self._queue.popleft()
            batch = [first]
            for job in list(self._queue):
                if len(batch) >= self.max_batch:
                    break
                if job.system == first.system and job.modules is first.modules and job.sampling == first.sampling:
                    self._queue.remove(job)
                    if job.cancelled.is_set():
                        self._drop(job)
                    else:
                        batch.append(job)
            self._running = batch
            return batch

    def _drop(self, job: Job) -> None:
        self.metrics.cancelled += 1
        job.finish(error=Cancelled("the client disconnected"))

    def _run_batch(self, batch: list[Job]) -> None:
        started = time.monotonic()
        settings = self._settings_for(batch[0].sampling)
        try:
            traces = run(batch[0].system, [job.question for job in batch], batch[0].modules, settings,
                         _JobEvents(batch), pool=self.pool,
                         should_stop=lambda: all(job.cancelled.is_set() for job in batch),
                         dropped=lambda index: batch[index].cancelled.is_set())
        except Cancelled:
            traces = None
        except Exception as e:  # noqa: BLE001 - every waiting client gets the error, the worker lives on
            if not isinstance(e, TmdError):
                log.exception("batch of %d %s questions failed", len(batch), batch[0].system)
            self.metrics.failed += sum(not job.cancelled.is_set() for job in batch)
            for job in batch:
                job.finish(error=e)
            traces = []
        finally:
            self._record_memory()
            with self._lock:
                self._running = []
        if traces is None or traces:
            self._settle(batch, traces, time.monotonic() - started)

    def _settle(self, batch: list[Job], traces: list[Trace] | None, seconds: float) -> None:
        self.metrics.batches += 1
        done = 0
        for index, job in enumerate(batch):
            if job.cancelled.is_set() or traces is None:
                self._drop(job)
                continue
            self.metrics.add_trace(traces[index])
            self.metrics.answered += 1
            self.metrics.latencies.append(time.monotonic() - job.queued_at)
            job.finish(traces[index])
            done += 1
        if done:
            self._seconds_per_question = seconds / done

    def _record_memory(self) -> None:
        """The pool resets the kernel's peak RSS on each load, so keep the highest seen here; and
        forget the pool's per-use history, which would otherwise grow for the server's lifetime."""
        peaks = [r.peak_rss_mb for r in self.pool.history] + [peak_rss_mb()]
        self.metrics.peak_rss_mb = max(self.metrics.peak_rss_mb, *peaks)
        self.pool.history.clear()

    def _settings_for(self, sampling: Sampling) -> GenerationSettings:
        base = self.settings
        max_tokens = dict(base.max_tokens)
        if sampling.max_tokens is not None:
            max_tokens = {stage: min(limit, sampling.max_tokens) for stage, limit in max_tokens.items()}
        return dataclasses.replace(base, temperature=sampling.temperature, seed=sampling.seed,
                                   max_tokens=max_tokens)


class _JobEvents(Events):
    """Pipeline progress, sent to the streaming clients of a batch (stage events go to every job
    in it, text to the job whose question it is)."""

    def __init__(self, batch: list[Job]):
        self.batch = batch

    def _all(self, event: dict) -> None:
        for job in self.batch:
            if not job.cancelled.is_set():
                job.emit(event)

    def stage_started(self, stage, model) -> None:
        self._all({"event": "stage_started", "stage": stage, "model": model.name})

    def module_ready(self, stage: str, residency: Residency) -> None:
        self._all({"event": "module_ready", "stage": stage, "how": residency.how,
                   "load_seconds": round(residency.load_seconds, 3)})

    def stage_finished(self, stage: str, residency: Residency) -> None:
        self._all({"event": "stage_finished", "stage": stage, "peak_rss_mb": round(residency.peak_rss_mb, 1)})

    def generation_started(self, stage: str, index: int, call: int) -> None:
        self.batch[index].emit({"event": "generation_started", "stage": stage, "call": call})

    def text(self, stage: str, index: int, piece: str) -> None:
        self.batch[index].emit({"event": "text", "stage": stage, "text": piece})

    def step_done(self, stage: str, index: int, trace: Trace) -> None:
        record = trace.stages.get(stage)
        event = {"event": "step_done", "stage": stage,
                 "seconds": round(record.seconds + record.load_seconds, 3) if record else None}
        if stage == "analyzer":
            event["subquestions"] = list(trace.subquestions)
        elif stage == "informant":
            event["knowledge"] = list(trace.knowledge)
        self.batch[index].emit(event)


def _percentile(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    rank = min(len(sorted_values) - 1, max(0, math.ceil(pct / 100 * len(sorted_values)) - 1))  # nearest rank
    return round(sorted_values[rank], 3)
