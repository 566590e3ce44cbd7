"""Headless scale-out: one RunConfig trained by N processes with DistributedDataParallel.

Two ways in, the same code path as a one-process run (:func:`~kdcore.train.experiment.run_experiment`):

* ``python -m kdcore run CONFIG --nproc 2`` spawns N local processes (:func:`run_distributed`);
* ``torchrun --nproc_per_node 2 -m kdcore run CONFIG`` starts them itself; the CLI joins the group
  that torchrun describes (:func:`init_from_env`).

What happens on each rank: the data and the models are built from the config exactly as in a
one-process run (same seed, same initial weights; DDP also broadcasts rank 0's weights). In
every phase (teacher, extra teachers, baseline, distilled) each rank draws the same shuffled
batch, trains on its share ``batch[rank::N]``, and DDP averages the gradients, so every rank
takes the same optimiser step; losses, terms and accuracy are all-reduced so every rank reports
the global numbers and stops or diverges at the same step (:func:`kdcore.train.trainer.fit`). Every
rank evaluates on the full validation and test sets (redundant, simple); only rank 0 writes the
run history and emits events. ``compare --nproc N`` runs each seed this way, one after another.

Backends: gloo on CPU (tested here with two processes); with a CUDA device each rank takes
``cuda:<local rank>`` and NCCL (written for GPU servers, not tested in this repository). Not
done: BatchNorm statistics are not synchronised across ranks (each rank normalises with its own
share; DDP broadcasts rank 0's running statistics) — ``torch.nn.SyncBatchNorm`` refuses CPU
tensors, so it could not be tested here; a BatchNorm model's distributed run therefore differs
slightly from the one-process run, while models without BatchNorm (mlp) match it.
"""
from __future__ import annotations

import io
import os
import queue
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Iterable

import torch
import torch.distributed as dist

from ..config import RunConfig, replace
from ..errors import ConfigError
from ..events import Callback
from .experiment import RunResult, run_experiment
from ..history.rebuild import phase_models

__all__ = ["DistributedRun", "run_distributed", "seed_runner", "init_from_env", "rank_config", "backend_for"]


@dataclass
class DistributedRun:
    result: RunResult  # rank 0's result; its models are rebuilt from rank 0's weights
    rank_weights: list[dict[str, dict[str, torch.Tensor]]] = field(default_factory=list)  # per rank


def backend_for(cfg: RunConfig) -> str:
    """NCCL for CUDA runs, gloo otherwise."""
    return "nccl" if cfg.device.startswith("cuda") else "gloo"


def rank_config(cfg: RunConfig, local_rank: int) -> RunConfig:
    """The config one rank runs: a CUDA run puts each local rank on its own GPU."""
    if cfg.device.startswith("cuda"):
        return replace(cfg, device=f"cuda:{local_rank}")
    return cfg


def init_from_env(cfg: RunConfig, *, timeout_s: float = 1800) -> tuple[int, int, int] | None:
    """Join the process group torchrun describes, if it describes more than one process.

    Args:
        cfg: the run (picks the backend). timeout_s: how long a collective waits for a slow rank.
    Returns:
        (rank, world size, local rank), or None when WORLD_SIZE is unset or 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not dist.is_initialized():
        dist.init_process_group(backend_for(cfg), timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, cfg: RunConfig, nproc: int, port: int, runs_dir: str | None,
            callbacks: list, out, timeout_s: float, filing: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # share the cores instead of every rank starting one thread per core
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    dist.init_process_group(backend_for(cfg), rank=rank, world_size=nproc,
                            timeout=timedelta(seconds=timeout_s))
    try:
        store = None
        if rank == 0 and runs_dir is not None:
            from ..history.store import RunStore

            store = RunStore(runs_dir)
        filing = dict(filing)
        teacher_state = filing.pop("teacher_state", None)
        reuse = {"teacher": phase_models(cfg, {"teacher": teacher_state})["teacher"]} if teacher_state else {}
        # every rank makes the same teacher decision: the parent looked in the history for all of them
        res = run_experiment(rank_config(cfg, rank), store=store, callbacks=callbacks if rank == 0 else (),
                             reuse=reuse, find_teacher=False, **filing)
        weights = {p: {k: v.detach().cpu() for k, v in m.state_dict().items()}
                   for p, m in res.models.items() if p != "ensemble"}
        buf = io.BytesIO()
        torch.save(weights, buf)
        out.put((rank, res.status, res.message, res.metrics, res.history, res.run_id, res.seconds,
                 buf.getvalue()))
    finally:
        dist.destroy_process_group()


def seed_runner(nproc: int, *, store=None, callbacks: Iterable[Callback] = (), recorders=()):
    """A ``runner`` for :func:`kdcore.train.experiment.compare` that trains each seed on ``nproc`` local
    processes (:func:`run_distributed`), handing the shared teacher's weights to every rank."""
    def one(cfg: RunConfig, reuse: dict, group: str) -> RunResult:
        state = reuse["teacher"].state_dict() if "teacher" in reuse else None
        return run_distributed(cfg, nproc, runs_dir=None if store is None else store.root, callbacks=callbacks,
                               kind="compare", group=group, teacher_state=state, recorders=recorders).result
    return one


def run_distributed(cfg: RunConfig, nproc: int, *, runs_dir: str | os.PathLike | None = None,
                    callbacks: Iterable[Callback] = (), timeout_s: float = 1800,
                    kind: str = "run", group: str | None = None,
                    teacher_state: dict | None = None, recorders=()) -> DistributedRun:
    """Run ``cfg`` on ``nproc`` local processes with DistributedDataParallel.

    Args:
        cfg: the run, unchanged from a one-process run. nproc: number of processes (>= 2).
        runs_dir: where rank 0 files the run history (None = keep nothing).
        callbacks: receive rank 0's events, in rank 0's process (so they must be picklable;
            a callback that appends to a list in this process sees nothing).
        timeout_s: how long a collective waits for a slow rank before the run fails.
        kind, group: how the run is filed in the history (as in run_experiment).
        teacher_state: trained teacher weights every rank loads instead of training; when None and
            the history holds a finished run that trained this very teacher, its weights are used
            (decided here, once, so every rank does the same).
        recorders: as in run_experiment, used by rank 0 (module-level functions: they are pickled).
    Returns:
        DistributedRun with rank 0's RunResult and every rank's final weights.
    Raises:
        ConfigError: nproc < 2, or more CUDA processes than GPUs.
    """
    if not isinstance(nproc, int) or nproc < 2:
        raise ConfigError(f"--nproc = {nproc!r} is not allowed; use 2 or more (1 is a normal run)")
    if cfg.device.startswith("cuda") and torch.cuda.device_count() < nproc:
        raise ConfigError(f"--nproc = {nproc} CUDA processes need {nproc} GPUs; this machine has "
                          f"{torch.cuda.device_count()}")
    import torch.multiprocessing as mp

    if teacher_state is None and runs_dir is not None:
        from .experiment import find_trained_teacher
        from ..history.store import RunStore

        store = RunStore(runs_dir)
        if (rid := find_trained_teacher(store, cfg)) is not None:
            teacher_state = store.load_weights(rid, "teacher")
    out = mp.get_context("spawn").Queue()
    procs = mp.start_processes(_worker, args=(cfg, nproc, _free_port(), None if runs_dir is None else str(runs_dir),
                                              list(callbacks), out, timeout_s,
                                              {"kind": kind, "group": group, "teacher_state": teacher_state,
                                               "recorders": tuple(recorders)}),
                               nprocs=nproc, join=False, start_method="spawn")
    got: dict[int, tuple] = {}
    done = False
    while len(got) < nproc:
        try:
            item = out.get(timeout=0.5 if not done else 5)
        except queue.Empty:
            if done:
                break
            done = procs.join(timeout=0)  # raises ProcessRaisedException if a rank failed
            continue
        got[item[0]] = item
    procs.join()
    if len(got) < nproc:
        raise RuntimeError(f"only ranks {sorted(got)} of {nproc} reported a result")
    ranks = [torch.load(io.BytesIO(got[r][7]), weights_only=True) for r in range(nproc)]
    _, status, message, metrics, history, run_id, seconds, _ = got[0]
    res = RunResult(status, message, metrics, history, phase_models(cfg, ranks[0]), run_id, seconds)
    return DistributedRun(res, ranks)
