"""Executors: how a study's pending cells run. Each one runs :func:`run_cell_job` (the unit of work,
:func:`densescale.study.cell.run_cell`) on every cell it is given and reports each record as it
arrives; another engine (Ray, Dask, a job queue) is one more class with the same ``run``.

- :class:`InProcess`: one cell after another in this process (``executor.workers = 1``).
- :class:`LocalPool`: a pool of spawned worker processes (``workers > 1``).
- :class:`Submitit`: a SLURM job array through submitit (``executor.kind = "submitit"``).

An interrupt (Ctrl-C, SIGINT) stops within seconds: queued cells are cancelled, pool workers and
submitted jobs are stopped, and :class:`KeyboardInterrupt` goes on to the caller. Finished records
and training checkpoints are written atomically, so they stay intact and a rerun resumes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

from densescale.study.cell import run_cell
from densescale.study.config import Cell, StudyConfig

OnRecord = Callable[[dict], None]


class Executor(Protocol):
    def run(self, study: StudyConfig, cells: list[Cell], on_record: OnRecord) -> None:
        """Run every cell, call ``on_record`` with each finished record, and return when all are
        done; on KeyboardInterrupt stop everything started and re-raise."""


def run_cell_job(study: StudyConfig, cell: Cell, threads: int | None) -> dict:
    """Entry point of a worker process or SLURM task (sets up torch.distributed under submitit
    when a cell spans several GPUs)."""
    if (
        os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
        and int(os.environ.get("SLURM_NTASKS", "1")) > 1
    ):
        import submitit
        import torch

        env = submitit.helpers.TorchDistributedEnvironment().export()
        torch.distributed.init_process_group(
            "nccl" if torch.cuda.is_available() else "gloo",
            rank=env.rank,
            world_size=env.world_size,
        )
        torch.cuda.set_device(env.local_rank)
    return run_cell(study, cell, threads=threads)


class InProcess:
    def __init__(self, threads: int | None = None, progress: bool = True) -> None:
        self.threads, self.progress = threads, progress

    def run(self, study: StudyConfig, cells: list[Cell], on_record: OnRecord) -> None:
        for cell in cells:
            on_record(run_cell(study, cell, threads=self.threads, progress=self.progress))


def _worker_init() -> None:
    """Pool workers leave Ctrl-C to the study process (which stops them), and stop when it dies
    (killed), instead of training on as orphans beside the rerun that resumes their cells."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="densescale-parent-watch").start()


class LocalPool:
    def __init__(self, workers: int, threads: int | None = None) -> None:
        self.workers, self.threads = workers, threads

    def run(self, study: StudyConfig, cells: list[Cell], on_record: OnRecord) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init
        )
        try:
            futures = [pool.submit(run_cell_job, study, c, self.threads) for c in cells]
            for fut in as_completed(futures):
                on_record(fut.result())
        except KeyboardInterrupt:
            _stop_pool(pool)
            raise
        finally:
            pool.shutdown(wait=True)  # after an error, the other cells still finish


def _stop_pool(pool) -> None:
    """Cancel the queued cells and stop the running ones (SIGTERM, then SIGKILL after 5 s)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # a second Ctrl-C
    try:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.terminate()
        deadline = time.time() + 5.0
        for p in procs:
            p.join(max(0.0, deadline - time.time()))
            if p.is_alive():
                p.kill()
                p.join(1.0)
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


class Submitit:
    def __init__(self, folder, options: dict, threads: int | None = None) -> None:
        self.folder, self.options, self.threads = folder, dict(options), threads

    def run(self, study: StudyConfig, cells: list[Cell], on_record: OnRecord) -> None:
        import submitit

        opts = dict(self.options)
        cluster = opts.pop("cluster", None)
        executor = submitit.AutoExecutor(folder=self.folder, cluster=cluster)
        if opts:
            executor.update_parameters(**opts)
        n = len(cells)
        jobs = executor.map_array(run_cell_job, [study] * n, cells, [self.threads] * n)
        try:
            for job in jobs:
                on_record(job.result())
        except KeyboardInterrupt:
            for job in jobs:
                if not job.done():
                    job.cancel(check=False)
            raise


def make_executor(study: StudyConfig, *, progress: bool = True) -> Executor:
    """The executor ``study.executor`` names (kind, workers, threads_per_worker, submitit)."""
    ex = study.executor
    threads = ex.get("threads_per_worker")
    if ex.get("kind", "local") == "submitit":
        return Submitit(study.output / "submitit", ex.get("submitit", {}), threads)
    workers = int(ex.get("workers", 1))
    return LocalPool(workers, threads) if workers > 1 else InProcess(threads, progress)
