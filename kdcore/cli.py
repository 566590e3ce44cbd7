"""Command line: the same RunConfig the dashboard builds, run headless.

This module is the terminal's UI, so unlike the rest of kdcore it prints.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import threading
from pathlib import Path

from .lazy import pandas as pd  # imported on first use: start-up stays fast

from .config import RunConfig, from_dict, to_dict, to_json
from .errors import ConfigError, DataUnavailable, StoreUnavailable
from .events import EpochEnd, PhaseEnd, PhaseStart, SeedStart, StepEnd
from .registry import LOSSES

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

# What --help lists. The registries fill by importing torch (a second or more), and --help must
# answer without it, so it reads these names; tests/test_startup.py fails when they differ from
# the filled registries (a new built-in method is added here too; `methods` reads the registry).
# The help of every subcommand is static text for the same reason.
HELP_NAMES = {
    "models": ("mlp", "lenet5", "cnn", "resnet8", "resnet20", "resnet32", "resnet18", "mobilenet_v3_small",
               "torchvision"),
    "datasets": ("moons", "circles", "spirals", "blobs", "fashion_mnist", "mnist", "cifar10", "image_folder",
                 "csv"),
    "losses": ("kd", "soft_ce", "mse_logits", "dkd", "logit_std", "fitnets", "at", "sp", "rkd", "adversarial"),
}


def _set(d: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"--set {dotted}=...: the key must be dotted field names like loss.temperature")
    cur = d
    for i, k in enumerate(keys[:-1]):
        if k not in cur or cur[k] is None:
            cur[k] = {}
        if not isinstance(cur[k], dict):
            raise ConfigError(f"--set {dotted}=...: {'.'.join(keys[:i + 1])} is "
                              f"{type(cur[k]).__name__}, not an object with fields; set it whole, "
                              f"e.g. --set {'.'.join(keys[:i + 1])}='[...]'")
        cur = cur[k]
    try:
        cur[keys[-1]] = json.loads(raw)
    except json.JSONDecodeError:
        cur[keys[-1]] = raw  # bare strings: --set data.name=mnist
    except RecursionError:
        raise ConfigError(f"--set {dotted}=...: the value nests too deep") from None


def read_config_file(path: str) -> dict:
    """The JSON object in ``path``; every way it can be unreadable is a ConfigError naming it."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"config {path} is a folder; pass a JSON file (python -m kdcore config > run.json)") from None
    except OSError as e:
        raise ConfigError(f"config {path} cannot be read: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {path} is {len(raw) // 1024} KB; a run config is at most "
                          f"{MAX_CONFIG_BYTES // 1024} KB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not UTF-8 text; pass a JSON file") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config {path} is not valid JSON: {e}") from None
    except RecursionError:
        raise ConfigError(f"config {path} nests too deep to be a run config") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config {path} must hold a JSON object, got {type(d).__name__}")
    return d


MAX_CONFIG_BYTES = 1 << 20  # a run config is a few hundred bytes; this refuses mistakes, not users


def load_config(path: str | None, overrides: list[str], args) -> RunConfig:
    """Config file (or defaults) + --set overrides + the data/device flags, validated."""
    d = to_dict(RunConfig()) if path is None else read_config_file(path)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like key.path=value, e.g. loss.temperature=4")
        k, v = item.split("=", 1)
        _set(d, k.strip(), v.strip())
    data = d.setdefault("data", {})
    if not isinstance(data, dict):
        raise ConfigError(f"data must be a JSON object, got {type(data).__name__}")
    if getattr(args, "data_dir", None) is not None:
        data["data_dir"] = args.data_dir
    if getattr(args, "download", False):
        data["download"] = True
    if getattr(args, "retrain_teacher", False):
        d["retrain_teacher"] = True
    if getattr(args, "device", None):
        d["device"] = args.device
    cfg = from_dict(d)
    from .budget import preflight

    preflight(cfg, getattr(args, "runs_dir", None))
    return cfg


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
        elif isinstance(ev, SeedStart):
            print(f"== seed {ev.seed} ({ev.index + 1} of {ev.total}) ==", flush=True)
        elif isinstance(ev, PhaseEnd) and ev.status == "completed" and ev.metrics:
            print(f"[{ev.phase}] test accuracy {ev.metrics['accuracy']:.4f}", flush=True)


def _store(args):
    from .history.store import RunStore

    return RunStore(args.runs_dir)


def _execute(args, cfg: RunConfig, job) -> tuple[object, bool]:
    """Run ``job(cfg, store, callbacks, nproc)`` here, on --nproc spawned processes, or as one
    rank of a torchrun launch (joining its group; rank 0 alone files and prints).

    Returns:
        (the job's result, whether this process reports it).
    """
    from .train.distributed import init_from_env, rank_config

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
    from .train.distributed import run_distributed
    from .train.experiment import run_experiment
    from .lab.teaching import LAB_RECORDERS

    def job(cfg, store, cbs, nproc):
        if nproc > 1:
            return run_distributed(cfg, nproc, runs_dir=None if store is None else store.root,
                                   callbacks=cbs, recorders=LAB_RECORDERS).result
        return run_experiment(cfg, store=store, callbacks=cbs, stop=threading.Event(), recorders=LAB_RECORDERS)

    res_cfg = load_config(args.config, args.set, args)
    res, report = _execute(args, res_cfg, job)
    if report:  # rank 0 reports for everyone
        _report_run(res, res_cfg)
    return 0 if res.status == "completed" else 1


def _report_run(res, res_cfg: RunConfig) -> None:
    from .train.experiment import arm_descriptions, little_to_distil, results_table

    if res.metrics:
        print(results_table(res.metrics).set_index("model").to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"status: {res.status}" + (f" (run {res.run_id})" if res.run_id else "") + f", {res.seconds:.1f}s")
    for phase, saw in arm_descriptions(res_cfg).items():
        if phase in res.metrics:
            print(f"  {phase} saw {saw}")
    if note := little_to_distil(res.metrics):
        print(note)
    print(res.message)


def cmd_compare(args) -> int:
    from .train.distributed import seed_runner
    from .train.experiment import compare, parse_seeds
    from .lab.teaching import LAB_RECORDERS

    cfg = load_config(args.config, args.set, args)
    seeds = parse_seeds(args.seeds)
    out, report = _execute(args, cfg, lambda c, store, cbs, nproc: compare(
        c, seeds=seeds, store=store, callbacks=cbs, share_teacher=not args.teacher_per_seed,
        recorders=LAB_RECORDERS,
        runner=seed_runner(nproc, store=store, callbacks=cbs, recorders=LAB_RECORDERS) if nproc > 1 else None))
    failed = [r for r in out.runs if r.status != "completed"]
    if not report:
        return 1 if failed else 0
    t = out.table
    show = pd.DataFrame({"model": t["model"], "seeds": t["seeds"]})
    for k in ("accuracy", "f1", "ece", "agreement"):
        if f"{k}_mean" in t:
            show[k] = [f"{m:.4f} ± {s:.4f}" if m == m else "" for m, s in zip(t[f"{k}_mean"], t[f"{k}_std"])]
    for k in ("params", "size_mb", "latency_ms"):
        show[k] = t[f"{k}_mean"].round(3)
    print(show.to_string(index=False))
    for r in out.runs:
        if r.status == "completed":
            print(f"seed {r.seed}" + (f" (run {r.run_id})" if r.run_id else "") + f": {r.message}")
    print(out.summary())
    for r in failed:
        print(f"run {r.run_id}: {r.status}: {r.message}")
    return 1 if failed else 0


def cmd_methods(args) -> int:
    from .methods import METHOD_INFO, MULTI_TEACHER_INFO

    names = [args.name] if args.name else list(LOSSES.names())
    for name in names:
        if name not in LOSSES:
            raise ConfigError(f"unknown loss {name!r}; known: {', '.join(LOSSES.names())}")
        info = METHOD_INFO[name]
        uses_t = "uses T" if info.uses_temperature else "T unused"
        print(f"{name}: {info.title} [{info.kind}; terms: {', '.join(info.terms)}; {uses_t}]")
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


def run_id_arg(text: str, what: str = "run id") -> int:
    """A run id typed by a person: a positive integer, else a ConfigError naming it."""
    t = str(text).strip()
    if not t.isdigit() or not 0 < int(t) < 2**63:
        raise ConfigError(f"{what} {text!r} is not a run id; ids are positive integers "
                          "(python -m kdcore runs list shows them)")
    return int(t)


def cmd_compress(args) -> int:
    from .ship.compress import check_phase, compression_table, load_run_model

    check_phase(args.phase)
    try:
        amounts = [float(a) for a in args.prune.split(",")] if args.prune else []
    except ValueError:
        raise ConfigError(f"--prune {args.prune!r} must be shares like 0.5,0.8") from None
    if not all(0 < a < 1 for a in amounts):
        raise ConfigError(f"--prune {args.prune!r}: each share must be in (0, 1), like 0.5,0.8")
    run_id = run_id_arg(args.id)
    model, data, _ = load_run_model(_store(args), run_id, args.phase)
    t = compression_table(model, data, prune_amounts=amounts, scope=args.scope, quantize=not args.no_quantize)
    print(f"run {run_id}, {args.phase} model, test set of {len(data.y_test)}, CPU:")
    print(t.drop(columns=["device"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_export(args) -> int:
    from .ship.export import AGREEMENT_TARGET, export_run

    from .ship.compress import check_phase

    check_phase(args.phase)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    res = export_run(_store(args), run_id_arg(args.id), args.phase, args.variant, formats=formats,
                     verify=not args.no_verify)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, content in res.files.items():
        (out / name).write_bytes(content)
        print(f"wrote {out / name} ({len(content) / 1024:.1f} KiB)")
    v = res.verification
    if v:
        print(f"onnxruntime vs PyTorch on the {v['n']} test samples: same prediction on "
              f"{v['agreement']:.4%} (target >= {AGREEMENT_TARGET:.1%}), max logit difference "
              f"{v['max_abs_logit_diff']:.3g}; accuracy {v['onnx_accuracy']:.4f} (onnx) vs "
              f"{v['torch_accuracy']:.4f} (torch)")
        print(f"CPU latency, batch of {v['latency_batch']}, {v['threads']} thread(s): onnxruntime "
              f"{v['onnx_latency_ms']:.3f} ms, PyTorch {v['torch_latency_ms']:.3f} ms")
        if not res.target_applies:
            print("(int8: onnxruntime's and PyTorch's dynamic quantizers round differently, so the "
                  "agreement is reported, not required)")
        elif not res.verified:
            print("error: the ONNX file does not agree with PyTorch often enough", file=sys.stderr)
            return 1
    return 0


def cmd_runs(args) -> int:
    with_id = ("show", "config", "delete", "resume")
    if args.action in with_id and not args.id:
        raise ConfigError(f"runs {args.action} needs a run id, e.g. python -m kdcore runs {args.action} 3")
    run_id = run_id_arg(args.id) if args.action in with_id else None
    if args.action == "export" and args.ids is not None:
        ids = [run_id_arg(i, "--ids entry") if i.strip().isdigit() else None for i in args.ids.split(",")]
        if None in ids or not ids:
            raise ConfigError(f"--ids {args.ids!r} must be run ids separated by commas, like 3,5,8")
    store = _store(args)
    if args.action == "list":
        t = store.table()
        print(t.to_string(index=False) if len(t) else "no runs yet")
    elif args.action == "show":
        run = store.get(run_id)
        print(json.dumps(run, indent=2, default=str))
        print(f"replay: python -m kdcore runs config {run['id']} > run.json && python -m kdcore run run.json")
    elif args.action == "config":
        print(json.dumps(store.get(run_id)["config"], indent=2, sort_keys=True))
    elif args.action == "export" and args.tensorboard:
        from .ship.tensorboard import export_tensorboard

        for path in export_tensorboard(store, args.tensorboard, ids if args.ids is not None else None):
            print(f"wrote {path}")
        print(f"read them with: tensorboard --logdir {args.tensorboard}")
    elif args.action == "export":
        out = Path(args.out)
        if out.is_dir() or not out.parent.is_dir():
            raise ConfigError(f"--out {args.out}: " + ("is a folder; name a file in it" if out.is_dir()
                                                       else f"folder {out.parent} does not exist"))
        try:
            print(f"wrote {store.export_csv(out, ids if args.ids is not None else None)}")
        except OSError as e:
            raise ConfigError(f"--out {args.out}: cannot write it: {e.strerror or e}") from None
    elif args.action == "delete":
        store.delete(run_id)
        print(f"deleted run {run_id}")
    elif args.action == "resume":
        from .config import from_dict
        from .train.experiment import resume
        from .lab.teaching import LAB_RECORDERS

        run = store.resumable(run_id)
        print(f"resuming run {run_id} ({run['status']}): {run['message']}", flush=True)
        res = resume(run_id, store=store, callbacks=[Progress(0)], stop=threading.Event(), recorders=LAB_RECORDERS)
        _report_run(res, from_dict(run["config"]))
        return 0 if res.status == "completed" else 1
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake on one line (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (python -m kdcore{self.prog[len('python -m kdcore'):]} --help "
                     "shows what is allowed)\n")


def _positive(name: str, lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{v} is outside [{lo}, {hi}]")
        return v
    parse.__name__ = name
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m kdcore", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=KD_HELP.format(**{k: ", ".join(v) for k, v in HELP_NAMES.items()}))
    p.add_argument("--runs-dir", default=None, help="run history folder (default ./runs or $KD_RUNS_DIR)")
    sub = p.add_subparsers(dest="cmd", metavar="command", required=True, parser_class=_Parser)

    def common(sp):
        sp.add_argument("config", nargs="?", help="RunConfig JSON file (default: built-in defaults)")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a field, e.g. --set loss.temperature=4 --set loss.alpha=0.1")
        sp.add_argument("--data-dir", help="local dataset folder (torchvision layout); or set KD_DATA_DIR")
        sp.add_argument("--download", action="store_true", help="let torchvision download the dataset")
        sp.add_argument("--device", help="cpu, cuda, cuda:1, mps")
        sp.add_argument("--no-save", action="store_true", help="do not write to the run history")
        sp.add_argument("--retrain-teacher", action="store_true",
                        help="train the teacher even when a finished run trained the same one (default: load it)")
        sp.add_argument("--log-every", type=_positive("--log-every", 0, 10**9), default=0, metavar="N", help="print every N steps")

    def nproc(sp, cmd):
        sp.add_argument("--nproc", type=_positive("--nproc", 1, max(2, os.cpu_count() or 1)), default=1, metavar="N",
                        help="train with N local processes (DistributedDataParallel, gloo on CPU; "
                             f"or launch with: torchrun --nproc_per_node N -m kdcore {cmd} CONFIG)")

    run = sub.add_parser("run", help="teacher → baseline → distilled student, once")
    common(run)
    nproc(run, "run")
    c = sub.add_parser("compare", help="the same run over several seeds, mean ± std")
    common(c)
    nproc(c, "compare")
    c.add_argument("--seeds", default="3", help="a count (3 → seeds 0,1,2) or a list like 3,7")
    c.add_argument("--teacher-per-seed", action="store_true",
                   help="train a teacher for every seed (default: train it once and distil every seed from it)")
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
    r.add_argument("action", choices=["list", "show", "config", "export", "delete", "resume"],
                   help="resume: train an interrupted or stopped run on from its last finished epoch")
    r.add_argument("id", nargs="?", help="run id (show, config, delete, resume)")
    r.add_argument("--out", default="runs.csv", help="export: CSV path")
    r.add_argument("--ids", help="export: comma-separated run ids (default all)")
    r.add_argument("--tensorboard", metavar="DIR", help="export: write each run's curves (every loss "
                   "term, every phase) as TensorBoard event files under DIR instead of a CSV")
    ex = sub.add_parser("export", help="a stored run's model as ONNX and .safetensors, checked with onnxruntime")
    ex.add_argument("id", help="run id")
    ex.add_argument("--phase", default="distilled", help="which model of the run (default distilled)")
    ex.add_argument("--variant", default="float32",
                    help="float32, int8, pruned:0.5 or pruned:0.5+int8 (as in the compression table)")
    ex.add_argument("--format", default="onnx,safetensors", help="onnx, safetensors or both (default)")
    ex.add_argument("--out", default="export", help="folder for the files (default ./export)")
    ex.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check on the test split")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; every mistake is one ``error:`` line on stderr and a non-zero exit.

    ``KD_DEBUG=1`` lets an unexpected exception through with its traceback. Parsing and every
    ``--help`` import no torch; a command loads what it uses (the registries fill on first lookup).
    """
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "config":
            print(to_json(RunConfig()))
            return 0
        return {"run": cmd_run, "compare": cmd_compare, "runs": cmd_runs, "methods": cmd_methods,
                "compress": cmd_compress, "export": cmd_export}[args.cmd](args)
    except (ConfigError, DataUnavailable, StoreUnavailable, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {_one_line(msg)}", file=sys.stderr)
        return 2
    except OSError as e:  # --out into a missing folder, a full disk, ...
        where = f" {e.filename}" if e.filename else ""
        print(f"error: cannot write or read{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # last resort: still one line; KD_DEBUG=1 shows the traceback
        if os.environ.get("KD_DEBUG"):
            raise
        print(f"error: unexpected {type(e).__name__}: {_one_line(e)} (KD_DEBUG=1 shows where)", file=sys.stderr)
        return 1


def _one_line(msg) -> str:
    return " ".join(str(msg).split())
