"""The figures of issue 10's "Why", measured on a kdcore tree: fuzzed CLI calls, a SIGKILLed run,
concurrent model inits, an over-budget width, deletes, and untrusted uploads.

    python benchmarks/hardening_figures.py                      # this checkout
    python benchmarks/hardening_figures.py --root /tmp/before   # another tree (its kdcore/)

To measure the code before the change side by side:
    mkdir -p /tmp/before && git archive f86abf3 kdcore | tar -x -C /tmp/before
    python benchmarks/hardening_figures.py --root /tmp/before

Every section runs in its own subprocess with ``--root`` first on ``sys.path``; the fuzz cases
come from this checkout's ``tests/test_fuzz.py``. A config that a tree accepts and would train is
counted as such (its run is replaced by a sentinel so nothing trains or allocates).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SECTIONS = ("fuzz", "crash", "init", "budget", "delete", "uploads")


class WouldRun(Exception):
    """Raised instead of training: the tree accepted the config."""


def _wait_for_epochs(p: subprocess.Popen, db: Path, k: int) -> None:
    """Until the run ``p`` trains has filed ``k`` epochs in ``db`` (or it ended)."""
    while p.poll() is None:
        try:
            if db.exists() and sqlite3.connect(db).execute("SELECT COUNT(*) FROM epochs").fetchone()[0] >= k:
                return
        except sqlite3.OperationalError:  # the schema is being created
            pass
        time.sleep(0.05)


def _module(name: str):
    """``kdcore.<name>`` in this tree's layout: session 4 grouped kdcore by concept
    (``kdcore.experiment`` became ``kdcore.train.experiment``), and --root may name an older tree."""
    import importlib

    for full in (f"kdcore.train.{name}", f"kdcore.{name}"):
        try:
            return importlib.import_module(full)
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(f"no kdcore {name} module in this tree")


def _fuzz(tmp: Path) -> dict:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    ex = _module("experiment")

    def would_run(*a, **k):
        raise WouldRun()

    ex.run_experiment = ex.compare = would_run
    dist = _module("distributed")  # --nproc 1000 would start 1000 processes: count it, do not do it

    dist.run_distributed = would_run
    from kdcore.cli import main
    sys.path.insert(1, str(HERE))
    from tests.test_fuzz import cases, check, history_runs

    os.environ["KD_RUNS_DIR"] = str(tmp / "runs")
    tally: dict[str, int] = {}
    examples: dict[str, str] = {}
    all_cases = cases(tmp)
    t0 = time.perf_counter()
    for argv, needle in all_cases:
        out, err = io.StringIO(), io.StringIO()
        try:
            with redirect_stdout(out), redirect_stderr(err):
                try:
                    rc = main(argv)
                except SystemExit as e:
                    rc = e.code if isinstance(e.code, int) else 1
            why = check(rc, out.getvalue(), err.getvalue(), needle) or "refused, one line naming it"
        except WouldRun:
            why = "accepted (would train)"
        except BaseException as e:  # noqa: BLE001  an exception out of main is a traceback for the user
            why = f"traceback ({type(e).__name__})"
        key = why.split(" (")[0] if why.startswith("traceback") else why
        tally[key] = tally.get(key, 0) + 1
        examples.setdefault(key, " ".join(a[:50] for a in argv[2:]))
    return {"cases": len(all_cases), "outcomes": tally, "an example of each": examples,
            "runs written to the history": history_runs(tmp), "seconds": round(time.perf_counter() - t0, 1)}


def _crash(tmp: Path, root: Path) -> dict:
    from kdcore import to_json
    from kdcore.config import DataConfig, ModelConfig, OptimConfig, RunConfig

    cfg = RunConfig(data=DataConfig(name="moons", n_samples=800), teacher=ModelConfig("mlp", {"hidden": [64, 64]}),
                    teacher_optim=OptimConfig(epochs=500, lr=1e-2, batch_size=16))
    (tmp / "c.json").write_text(to_json(cfg))
    runs = tmp / "runs"
    env = {**os.environ, "PYTHONPATH": str(root)}
    p = subprocess.Popen([sys.executable, "-m", "kdcore", "--runs-dir", str(runs), "run", str(tmp / "c.json")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    db = runs / "history.sqlite"
    _wait_for_epochs(p, db, 8)
    p.send_signal(signal.SIGKILL)
    p.wait()
    k = sqlite3.connect(db).execute("SELECT COUNT(*) FROM epochs").fetchone()[0]
    time.sleep(1.0)
    from kdcore import RunStore

    run = RunStore(runs).list()[0]  # opening the history, as the app or the CLI does
    return {"epochs finished before SIGKILL": k, "status when the history is opened": run["status"],
            "epochs kept": len(RunStore(runs).epochs(run["id"])), "message": run["message"]}


def _init(n: int = 200) -> dict:
    import torch

    from kdcore.config import ModelConfig, RunConfig, replace
    build_models = _module("experiment").build_models

    base = RunConfig(teacher=ModelConfig("mlp", {"hidden": [128, 128]}), student=ModelConfig("mlp", {"hidden": [64]}))
    seeds = list(range(n))
    solo = {s: build_models(replace(base, seed=s), (2,), 3)[1].state_dict() for s in seeds}
    got: dict[int, dict] = {}

    def session(mine):  # a browser session starting runs, one after another
        for s in mine:
            got[s] = build_models(replace(base, seed=s), (2,), 3)[1].state_dict()

    threads = [threading.Thread(target=session, args=(seeds[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    differ = sum(not all(torch.equal(got[s][k], solo[s][k]) for k in solo[s]) for s in seeds)
    return {"student inits in 2 concurrent threads": n, "differing from the solo init": differ}


def _budget() -> dict:
    from kdapp import ui

    out = {}
    for width in (20000, 100000):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        try:
            r = ui.profile_dict("mlp", {"hidden": [width, width]}, (1, 28, 28), 10, 128)
            what = f"built and profiled: {r['params']:,} parameters"
        except Exception as e:  # noqa: BLE001
            what = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        out[f"Teacher params '{width}, {width}' (Fashion-MNIST)"] = {
            "outcome": what, "peak RSS growth MB": round(peak), "seconds": round(time.perf_counter() - t0, 2)}
    return out


def _cli(root: Path, runs: Path, *args: str) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "kdcore", "--runs-dir", str(runs), *args], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)
    return r.returncode, (r.stdout + r.stderr).strip().splitlines()[-1] if (r.stdout + r.stderr).strip() else ""


def _delete(tmp: Path, root: Path) -> dict:
    from kdcore import to_json
    from kdcore.config import DataConfig, ModelConfig, OptimConfig, RunConfig

    runs = tmp / "runs"
    rc, line = _cli(root, runs, "runs", "delete", "99999")
    out = {"runs delete 99999": {"exit": rc, "says": line}}
    cfg = RunConfig(data=DataConfig(name="moons", n_samples=800), teacher=ModelConfig("mlp", {"hidden": [64, 64]}),
                    teacher_optim=OptimConfig(epochs=60, lr=1e-2, batch_size=16),
                    optim=OptimConfig(epochs=5, lr=1e-2, batch_size=16))
    (tmp / "c.json").write_text(to_json(cfg))
    p = subprocess.Popen([sys.executable, "-m", "kdcore", "--runs-dir", str(runs), "run", str(tmp / "c.json")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)})
    db = runs / "history.sqlite"
    _wait_for_epochs(p, db, 2)
    try:
        rc, line = _cli(root, runs, "runs", "delete", "1")
        text = p.communicate(timeout=600)[0]
    finally:
        if p.poll() is None:
            p.kill()
    status = next((ln for ln in text.splitlines() if ln.startswith("status:")), text.strip().splitlines()[-1])
    out["runs delete 1 while another process trains run 1"] = {
        "exit": rc, "says": line, "the training process then": status[:200], "its exit": p.returncode}
    return out


def _uploads(tmp: Path) -> dict:
    import pickle

    import torch

    from kdcore import RunStore
    from kdapp import ui
    from kdcore.config import OptimConfig, RunConfig, replace
    ex = _module("experiment")
    build_models, run_experiment = ex.build_models, ex.run_experiment

    cfg = RunConfig()
    teacher, _ = build_models(cfg, (2,), 2)
    runs = tmp / "runs"
    out = {}

    def upload(state_or_bytes):
        if isinstance(state_or_bytes, bytes):
            return state_or_bytes
        torch.save(state_or_bytes, tmp / "w.pt")
        return (tmp / "w.pt").read_bytes()

    try:
        ui.save_teacher_upload(upload({k: torch.full_like(v, float("nan")) for k, v in teacher.state_dict().items()}),
                               cfg, runs)
        out["state_dict full of NaN"] = "accepted"
    except Exception as e:  # noqa: BLE001
        out["state_dict full of NaN"] = f"refused: {str(e)[:120]}"

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    try:
        ui.save_teacher_upload(pickle.dumps({"w": Evil()}, protocol=2), cfg, runs)
        out["pickle with code"] = "accepted"
    except Exception as e:  # noqa: BLE001
        msg = str(e)
        out["pickle with code"] = {"message chars": len(msg), "names the cause (posix.system)": "system" in msg,
                                   "ends with": msg[-70:]}
    src = ui.save_teacher_upload(upload(teacher.state_dict()), cfg, runs)
    store = RunStore(runs)
    fast = replace(cfg, teacher_source=src, optim=OptimConfig(epochs=1, lr=1e-2))
    ids = [run_experiment(fast, store=store).run_id for _ in range(2)]
    for rid in ids:
        store.delete(rid)
    out["upload file after deleting both runs that used it"] = "removed" if not os.path.exists(src[5:]) else "kept"
    try:
        path = store.weights_path(1, "../../etc/passwd")
        out["weights path for phase ../../etc/passwd"] = f"built: {path.resolve()}"
    except ValueError as e:
        out["weights path for phase ../../etc/passwd"] = f"refused: {e}"
    return out


def section(name: str, root: Path) -> dict:
    sys.path.insert(0, str(root))
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        return {"fuzz": lambda: _fuzz(tmp), "crash": lambda: _crash(tmp, root), "init": _init,
                "budget": _budget, "delete": lambda: _delete(tmp, root), "uploads": lambda: _uploads(tmp)}[name]()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(HERE), help="the tree whose kdcore/ is measured (default: this checkout)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    ap.add_argument("--section", help=argparse.SUPPRESS)  # one section, in this (child) process
    a = ap.parse_args()
    root = Path(a.root).resolve()
    if a.section:
        print(json.dumps(section(a.section, root), default=str))
        return
    print(f"# kdcore from {root}; load: {os.getloadavg()[0]:.1f}")
    for name in a.only.split(","):
        try:  # a section that hangs is reported, not waited for (its child is killed with it)
            r = subprocess.run([sys.executable, __file__, "--root", str(root), "--section", name],
                               capture_output=True, text=True, cwd=tempfile.gettempdir(), timeout=900)
        except subprocess.TimeoutExpired:
            print(f"## {name}: did not finish in 900 s")
            continue
        if r.returncode:
            print(f"## {name}: the section itself failed (exit {r.returncode}): {r.stderr.strip()[-400:]}")
            continue
        print(f"## {name}\n{json.dumps(json.loads(r.stdout.strip().splitlines()[-1]), indent=2)}", flush=True)


if __name__ == "__main__":
    main()
