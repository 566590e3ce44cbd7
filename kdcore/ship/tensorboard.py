"""The run history as TensorBoard event files, so runs can be read beside other experiments.

Layout under ``out``: one folder per run and phase, ``run<id>[_<name>]/<phase>/``, so TensorBoard
lists e.g. ``run12/teacher``, ``run12/baseline``, ``run12/distilled`` as separate runs and overlays
the phases on the same charts. Tags in each:

    epoch/train_loss, epoch/train_acc, epoch/val_loss, epoch/val_acc, epoch/seconds
    epoch/term/<term>   every loss term the phase logged (ce, kd, dkd, hint, ...), epoch means
    step/loss, step/term/<term>   every recorded step
    test/<metric>       the phase's final test metrics (at the last epoch, or step 0)

plus the run's config as text under ``config`` in each phase folder.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

__all__ = ["export_tensorboard"]

_EPOCH_COLS = ("train_loss", "train_acc", "val_loss", "val_acc", "seconds")


def _folder_name(run: dict) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", (run.get("name") or "").strip())[:40].strip("_")
    return f"run{int(run['id'])}" + (f"_{name}" if name else "")


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def export_tensorboard(store, out: str | os.PathLike, run_ids: list[int] | None = None) -> list[Path]:
    """Write the curves of the given runs (all when None) as TensorBoard event files under ``out``.

    Args:
        store: a RunStore. out: the log folder (``tensorboard --logdir out``).
        run_ids: which runs; None = every run in the history.
    Returns:
        The phase folders written, one per run and phase that has epochs or test metrics.
    Raises:
        KeyError: a run id not in the history.
    """
    from torch.utils.tensorboard import SummaryWriter

    out = Path(out)
    ids = run_ids if run_ids is not None else sorted(r["id"] for r in store.list())
    written = []
    for rid in ids:
        run = store.get(rid)
        epochs, steps = store.epochs(rid), store.steps(rid)
        metrics = run["metrics"] or {}
        phases = list(dict.fromkeys([*(epochs["phase"] if len(epochs) else []),
                                     *(steps["phase"] if len(steps) else []), *metrics]))
        for phase in phases:
            folder = out / _folder_name(run) / phase
            w = SummaryWriter(log_dir=str(folder))
            try:
                w.add_text("config", "```\n" + json.dumps(run["config"], indent=2, sort_keys=True)
                           + "\n```", 0)
                last_epoch = 0
                if len(epochs):
                    ep = epochs[epochs["phase"] == phase]
                    term_cols = [c for c in ep.columns if c.startswith("term_")]
                    for row in ep.to_dict("records"):
                        e = int(row["epoch"])
                        last_epoch = max(last_epoch, e)
                        for col in (*_EPOCH_COLS, *term_cols):
                            v = _num(row.get(col))
                            if v is not None:
                                tag = f"epoch/term/{col[5:]}" if col.startswith("term_") else f"epoch/{col}"
                                w.add_scalar(tag, v, e)
                if len(steps):
                    sp = steps[steps["phase"] == phase]
                    term_cols = [c for c in sp.columns if c.startswith("term_")]
                    for row in sp.to_dict("records"):
                        s = int(row["step"])
                        v = _num(row.get("loss"))
                        if v is not None:
                            w.add_scalar("step/loss", v, s)
                        for col in term_cols:
                            v = _num(row.get(col))
                            if v is not None:
                                w.add_scalar(f"step/term/{col[5:]}", v, s)
                for k, v in (metrics.get(phase) or {}).items():
                    v = _num(v)
                    if v is not None:
                        w.add_scalar(f"test/{k}", v, last_epoch)
            finally:
                w.close()
            written.append(folder)
    return written
