"""Command line: the same RunConfig the dashboard builds, run headless.

This module is the terminal's UI, so unlike the rest of kdcore it prints.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
import threading
from pathlib import Path

import pandas as pd

from .config import RunConfig, from_dict, to_dict, to_json
from .errors import ConfigError, DataUnavailable
from .events import EpochEnd, PhaseEnd, PhaseStart, StepEnd
from .registry import DATASETS, LOSSES, MODELS

KD_HELP = """\
Knowledge distillation (Hinton et al. 2015). The distilled student minimises

    alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))

  T      temperature > 0. T = 1 is the plain softmax; larger T softens both distributions so the
         student sees how the teacher ranks the wrong classes ("dark knowledge").
  alpha  in [0, 1], the weight of the HARD-LABEL cross-entropy. alpha = 1 is the student alone
         (the baseline); alpha = 0 learns from the teacher's soft targets only.
  T^2    keeps the soft term's gradients the same size as T changes (loss.t2 = false drops it).

Every run trains (or loads) the teacher, then the same student twice with the same seed, init,
data order and schedule: once alone (baseline) and once distilled, and reports both on the test set.
Configs are JSON (see `python -m kdcore config`); override any field with --set a.b=value.
Models: {models}. Datasets: {datasets}. Losses: {losses}
(each explained, with its loss.params, by `python -m kdcore methods`).
"""


def _set(d: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        if not isinstance(cur.get(k), dict):
            cur[k] = {}
        cur = cur[k]
    try:
        cur[keys[-1]] = json.loads(raw)
    except json.JSONDecodeError:
        cur[keys[-1]] = raw  # bare strings: --set data.name=mnist


def load_config(path: str | None, overrides: list[str], args) -> RunConfig:
    """Config file (or defaults) + --set overrides + the data/device flags, validated."""
    d = to_dict(RunConfig()) if path is None else json.loads(Path(path).read_text())
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like key.path=value, e.g. loss.temperature=4")
        k, v = item.split("=", 1)
        _set(d, k.strip(), v.strip())
    data = d.setdefault("data", {})
    if getattr(args, "data_dir", None):
        data["data_dir"] = args.data_dir
    if getattr(args, "download", False):
        data["download"] = True
    if getattr(args, "device", None):
        d["device"] = args.device
    return from_dict(d)


class Progress:
    """Prints one line per epoch and a step counter, to stderr-free stdout."""

    def __init__(self, every: int = 0):
        self.every = every

    def __call__(self, ev) -> None:
        if isinstance(ev, PhaseStart):
            what = f"{ev.epochs} epochs x {ev.steps_per_epoch} steps" if ev.epochs else "evaluate"
            print(f"[{ev.phase}] start: {what}", flush=True)
        elif isinstance(ev, StepEnd) and self.every and ev.step % self.every == 0:
            terms = " ".join(f"{k}={v:.4f}" for k, v in ev.terms.items())
            print(f"[{ev.phase}] step {ev.step}/{ev.total_steps} loss={ev.loss:.4f} {terms}", flush=True)
        elif isinstance(ev, EpochEnd):
            terms = " ".join(f"{k}={v:.4f}" for k, v in ev.terms.items())
            print(f"[{ev.phase}] epoch {ev.epoch}/{ev.epochs} loss={ev.train_loss:.4f} ({terms}) "
                  f"train_acc={ev.train_acc:.4f} val_acc={ev.val_acc:.4f} {ev.seconds:.1f}s", flush=True)
        elif isinstance(ev, PhaseEnd) and ev.status == "completed" and ev.metrics:
            print(f"[{ev.phase}] test accuracy {ev.metrics['accuracy']:.4f}", flush=True)


def _store(args):
    from .store import RunStore

    return RunStore(args.runs_dir)


def _execute(args, cfg: RunConfig, job) -> tuple[object, bool]:
    """Run ``job(cfg, store, callbacks, nproc)`` here, on --nproc spawned processes, or as one
    rank of a torchrun launch (joining its group; rank 0 alone files and prints).

    Returns:
        (the job's result, whether this process reports it).
    """
    from .distributed import init_from_env, rank_config

    nproc = getattr(args, "nproc", 1)
    joined = init_from_env(cfg)  # started by torchrun with more than one process
    if joined is not None and nproc > 1:
        raise ConfigError("--nproc starts its own processes; under torchrun leave it out")
    if joined is None:
        return job(cfg, None if args.no_save else _store(args), [Progress(args.log_every)], nproc), True
    import torch.distributed as dist

    rank, _, local_rank = joined
    try:
        out = job(rank_config(cfg, local_rank), None if args.no_save or rank != 0 else _store(args),
                  [Progress(args.log_every)] if rank == 0 else [], 1)
    finally:
        dist.destroy_process_group()
    return out, rank == 0


def cmd_run(args) -> int:
    from .distributed import run_distributed
    from .experiment import results_table, run_experiment

    def job(cfg, store, cbs, nproc):
        if nproc > 1:
            return run_distributed(cfg, nproc, runs_dir=None if store is None else store.root,
                                   callbacks=cbs).result
        return run_experiment(cfg, store=store, callbacks=cbs, stop=threading.Event())

    res, report = _execute(args, load_config(args.config, args.set, args), job)
    if not report:  # rank 0 reports for everyone
        return 0 if res.status == "completed" else 1
    if res.metrics:
        print(results_table(res.metrics).set_index("model").to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"status: {res.status}" + (f" (run {res.run_id})" if res.run_id else "") + f", {res.seconds:.1f}s")
    print(res.message)
    return 0 if res.status == "completed" else 1


def cmd_compare(args) -> int:
    from .experiment import compare

    cfg = load_config(args.config, args.set, args)
    try:
        seeds = (list(range(int(args.seeds))) if args.seeds.isdigit()
                 else [int(s) for s in args.seeds.split(",")])
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r} must be a count (3) or a list (0,4,7)") from None
    out, report = _execute(args, cfg, lambda c, store, cbs, nproc: compare(
        c, seeds=seeds, store=store, callbacks=cbs, nproc=nproc))
    failed = [r for r in out.runs if r.status != "completed"]
    if not report:
        return 1 if failed else 0
    t = out.table
    show = pd.DataFrame({"model": t["model"], "seeds": t["seeds"]})
    for k in ("accuracy", "f1", "ece", "agreement"):
        if f"{k}_mean" in t:
            show[k] = [f"{m:.4f} ± {s:.4f}" for m, s in zip(t[f"{k}_mean"], t[f"{k}_std"])]
    for k in ("params", "size_mb", "latency_ms"):
        show[k] = t[f"{k}_mean"].round(3)
    print(show.to_string(index=False))
    if out.gain_mean is not None:
        print(f"gain of distillation over the baseline: {out.gain_mean * 100:+.2f} ± "
              f"{out.gain_std * 100:.2f} points over {len([r for r in out.runs if r.gain is not None])} seed(s)")
    for r in failed:
        print(f"run {r.run_id}: {r.status}: {r.message}")
    return 1 if failed else 0


def cmd_methods(args) -> int:
    from .methods import METHOD_INFO, MULTI_TEACHER_INFO

    names = [args.name] if args.name else list(LOSSES.names())
    for name in names:
        if name not in LOSSES:
            raise ConfigError(f"unknown loss {name!r}; known: {', '.join(LOSSES.names())}")
        info = METHOD_INFO.get(name)
        if info is None:
            print(f"{name}: (a plug-in loss without a description)\n")
            continue
        print(f"{name}: {info.title} [{info.kind}; terms: {', '.join(info.terms)}]")
        print(textwrap.fill(info.text, 96, initial_indent="  ", subsequent_indent="  "))
        for knob, p in info.params.items():
            print(f"    loss.params.{knob} (default {json.dumps(p.default)}): {p.help}")
        print()
    if not args.name:
        print(f"multi-teacher: {MULTI_TEACHER_INFO.title}")
        print(textwrap.fill(MULTI_TEACHER_INFO.text, 96, initial_indent="  ", subsequent_indent="  "))
        for knob, p in MULTI_TEACHER_INFO.params.items():
            print(f"    {knob}: {p.help}")
        print('  e.g. --set loss.name=dkd --set loss.params=\'{"beta_dkd": 4}\' '
              '--set extra_teachers=\'[{"name": "mlp", "params": {"hidden": [64]}}]\'')
    return 0


def cmd_compress(args) -> int:
    from .compress import compression_table, load_run_model

    try:
        amounts = [float(a) for a in args.prune.split(",")] if args.prune else []
    except ValueError:
        raise ConfigError(f"--prune {args.prune!r} must be shares like 0.5,0.8") from None
    model, data, _ = load_run_model(_store(args), args.id, args.phase)
    t = compression_table(model, data, prune_amounts=amounts, scope=args.scope, quantize=not args.no_quantize)
    print(f"run {args.id}, {args.phase} model, test set of {len(data.y_test)}, CPU:")
    print(t.drop(columns=["device"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_runs(args) -> int:
    store = _store(args)
    if args.action == "list":
        t = store.table()
        print(t.to_string(index=False) if len(t) else "no runs yet")
    elif args.action == "show":
        run = store.get(int(args.id))
        print(json.dumps(run, indent=2, default=str))
        print(f"replay: python -m kdcore runs config {run['id']} > run.json && python -m kdcore run run.json")
    elif args.action == "config":
        print(json.dumps(store.get(int(args.id))["config"], indent=2, sort_keys=True))
    elif args.action == "export":
        ids = [int(i) for i in args.ids.split(",")] if args.ids else None
        print(f"wrote {store.export_csv(args.out, ids)}")
    elif args.action == "delete":
        store.delete(int(args.id))
        print(f"deleted run {args.id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kdcore", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=KD_HELP.format(models=", ".join(MODELS.names()), datasets=", ".join(DATASETS.names()),
                                   losses=", ".join(LOSSES.names())))
    p.add_argument("--runs-dir", default=None, help="run history folder (default ./runs or $KD_RUNS_DIR)")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("config", nargs="?", help="RunConfig JSON file (default: built-in defaults)")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a field, e.g. --set loss.temperature=4 --set loss.alpha=0.1")
        sp.add_argument("--data-dir", help="local dataset folder (torchvision layout); or set KD_DATA_DIR")
        sp.add_argument("--download", action="store_true", help="let torchvision download the dataset")
        sp.add_argument("--device", help="cpu, cuda, cuda:1, mps")
        sp.add_argument("--no-save", action="store_true", help="do not write to the run history")
        sp.add_argument("--log-every", type=int, default=0, metavar="N", help="print every N steps")

    def nproc(sp, cmd):
        sp.add_argument("--nproc", type=int, default=1, metavar="N",
                        help="train with N local processes (DistributedDataParallel, gloo on CPU; "
                             f"or launch with: torchrun --nproc_per_node N -m kdcore {cmd} CONFIG)")

    run = sub.add_parser("run", help="teacher → baseline → distilled student, once")
    common(run)
    nproc(run, "run")
    c = sub.add_parser("compare", help="the same run over several seeds, mean ± std")
    common(c)
    nproc(c, "compare")
    c.add_argument("--seeds", default="3", help="a count (3 → seeds 0,1,2) or a list like 0,4,7")
    sub.add_parser("config", help="print the default RunConfig as JSON")
    m = sub.add_parser("methods", help="the distillation methods (loss.name) and their loss.params")
    m.add_argument("name", nargs="?", help="one method (default: all)")
    cp = sub.add_parser("compress", help="int8 quantization and magnitude pruning of a stored run's student")
    cp.add_argument("id", help="run id")
    cp.add_argument("--phase", default="distilled", help="which model of the run (default distilled)")
    cp.add_argument("--prune", default="0.5,0.8", help="pruning shares, comma-separated ('' = none)")
    cp.add_argument("--scope", choices=["global", "layer"], default="global", help="global or per-layer pruning")
    cp.add_argument("--no-quantize", action="store_true", help="leave out the int8 rows")
    r = sub.add_parser("runs", help="the run history")
    r.add_argument("action", choices=["list", "show", "config", "export", "delete"])
    r.add_argument("id", nargs="?", help="run id (show, config, delete)")
    r.add_argument("--out", default="runs.csv", help="export: CSV path")
    r.add_argument("--ids", help="export: comma-separated run ids (default all)")
    return p


def main(argv: list[str] | None = None) -> int:
    import kdcore  # noqa: F401  (fills the registries)

    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "config":
            print(to_json(RunConfig()))
            return 0
        if args.cmd == "runs" and args.action in ("show", "config", "delete") and not args.id:
            raise ConfigError(f"runs {args.action} needs a run id")
        return {"run": cmd_run, "compare": cmd_compare, "runs": cmd_runs, "methods": cmd_methods,
                "compress": cmd_compress}[args.cmd](args)
    except (ConfigError, DataUnavailable, KeyError, FileNotFoundError, json.JSONDecodeError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
