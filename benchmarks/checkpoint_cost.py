"""What per-epoch checkpoints cost, and what resuming gives back.

A run with a history writes one checkpoint per finished epoch of each phase (weights, optimiser,
schedule, generators: ``runs/<id>/checkpoints/<phase>.pt``), so a killed run can be resumed. This
script times every checkpoint write of a run against the epochs' own time, for the default
2-D run and a Fashion-MNIST CNN teacher, and checks that a run stopped half-way and resumed
ends with the weights of the uninterrupted run.

    python benchmarks/checkpoint_cost.py            # moons default + F-MNIST 5k CNN teacher, 2 epochs
    python benchmarks/checkpoint_cost.py --quick    # moons only

Prints two rows per config (a checkpoint after every epoch; the default spacing, KD_CHECKPOINT_S): epochs, checkpoint writes, their total and median time, the share of
the training time they add, the file size; then the resume check, and the load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time

import torch

from kdcore import RunStore
from kdcore.config import DataConfig, ModelConfig, OptimConfig, RunConfig, replace
from kdcore.events import EpochEnd
from kdcore.train.experiment import CHECKPOINT_ENV, checkpoint_every_s, resume, run_experiment


def configs(quick: bool) -> dict[str, RunConfig]:
    out = {"moons default (MLP teacher, 16 labels, 200 student epochs)": RunConfig(name="bench_ckpt")}
    if not quick:
        out["F-MNIST 5k: CNN teacher, 2 epochs; MLP 32 student, 2 epochs"] = RunConfig(
            data=DataConfig(name="fashion_mnist", train_subset=5000),
            teacher=ModelConfig("cnn", {}), student=ModelConfig("mlp", {"hidden": [32]}),
            optim=OptimConfig(epochs=2, lr=1e-3, batch_size=128),
            teacher_optim=OptimConfig(epochs=2, lr=1e-3, batch_size=128), name="bench_ckpt")
    return out


def timed_run(cfg: RunConfig, root: str) -> dict:
    store = RunStore(root)
    writes: list[float] = []
    save = store.save_checkpoint

    def timed_save(run_id, phase, state):
        t0 = time.perf_counter()
        save(run_id, phase, state)
        writes.append(time.perf_counter() - t0)

    store.save_checkpoint = timed_save  # the store the run writes through, timed
    epoch_s: list[float] = []
    sizes: list[int] = []

    def on_event(ev):
        if isinstance(ev, EpochEnd):
            epoch_s.append(ev.seconds)
            ckpt = store.checkpoint_path(ev.run_id, ev.phase)
            if ckpt.is_file():
                sizes.append(ckpt.stat().st_size)

    t0 = time.perf_counter()
    res = run_experiment(cfg, store=store, callbacks=[on_event])
    return {"status": res.status, "wall": time.perf_counter() - t0, "epochs": len(epoch_s),
            "train_s": sum(epoch_s), "writes": writes, "max_bytes": max(sizes, default=0)}


def resume_check(cfg: RunConfig, root: str) -> bool:
    """Stop the run in its distilled phase, resume it, compare with an uninterrupted run."""
    store = RunStore(root)
    stop = threading.Event()
    half = max(1, cfg.optim.epochs // 2)

    def stop_half_way(ev):
        if isinstance(ev, EpochEnd) and ev.phase == "distilled" and ev.epoch >= half:
            stop.set()

    first = run_experiment(cfg, store=store, callbacks=[stop_half_way], stop=stop)
    assert first.status == "stopped", first.message
    done = resume(first.run_id, store=store)
    whole = run_experiment(cfg)
    a, b = done.models["distilled"].state_dict(), whole.models["distilled"].state_dict()
    return done.status == "completed" and all(torch.equal(a[k], b[k]) for k in a)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the moons default only")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    print("| config | epochs | checkpoint writes | total write s | median write ms | share of training time | largest file |")
    print("|---|---|---|---|---|---|---|")
    for name, cfg in configs(args.quick).items():
        for every in ("0", None):  # a checkpoint after every epoch, then the default spacing
            if every is None:
                os.environ.pop(CHECKPOINT_ENV, None)
            else:
                os.environ[CHECKPOINT_ENV] = every
            with tempfile.TemporaryDirectory() as root:
                r = timed_run(cfg, root)
            w = r["writes"]
            how = "every epoch" if every else f"default, at most one per {checkpoint_every_s():g} s"
            print(f"| {name}; {how} | {r['epochs']} | {len(w)} | {sum(w):.2f} | "
                  f"{statistics.median(w) * 1000 if w else 0:.1f} | {sum(w) / r['train_s'] * 100:.1f} % | "
                  f"{r['max_bytes'] / 1024:.0f} KiB |")
    os.environ[CHECKPOINT_ENV] = "0"  # so the stop lands after a checkpoint, not before the first
    with tempfile.TemporaryDirectory() as root:
        cfg = replace(RunConfig(), optim=replace(RunConfig().optim, epochs=40), name="bench_ckpt")
        same = resume_check(cfg, root)
    print(f"stopped half-way through the distilled phase and resumed: "
          f"{'the same weights as the uninterrupted run' if same else 'OTHER WEIGHTS'}")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
