"""What filing a run in the history costs: per epoch, and for the Train page's default run.

    python benchmarks/bench_store.py                         # this tree
    python benchmarks/bench_store.py --against /tmp/old      # and another checkout, interleaved

1. Filing one epoch (its steps and its row) through ``RunStore.recorder``, 300 epochs of two
   steps each (the default 2-D run's students: 16 labels, batch 8), wall and CPU per epoch.
2. The Train page's default run (moons, 16 labels + transfer set, 3 seeds: teacher, then a
   baseline and a distilled student per seed; ``kdcore.compare``) with a history and without,
   each in a fresh process, ``--repeats`` times interleaved; with ``--against``, the same for that
   checkout (its ``kdcore`` on ``PYTHONPATH``), interleaved with this one.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PER_EPOCH = r'''
import tempfile, time
from kdcore.history.store import RunStore
from kdcore.events import EpochEnd, PhaseEnd, StepEnd
st = RunStore(tempfile.mkdtemp())
rid = st.create_run({"x": 1}, kind="run", group=None, name="bench_store")
rec = st.recorder(rid)
t0, c0 = time.perf_counter(), time.thread_time()
for e in range(1, 301):
    for s in range(2):
        rec(StepEnd("baseline", e, 2 * e + s, 600, 0.5, {"ce": 0.5}, 0.01, rid))
    rec(EpochEnd("baseline", e, 300, 0.5, {"ce": 0.5}, 0.5, 0.5, 0.5, 0.001, rid))
print((time.perf_counter() - t0) / 300 * 1e3, (time.thread_time() - c0) / 300 * 1e3)
rec(PhaseEnd("baseline", "completed", {}, "", rid))
assert len(st.phase_history(rid, "baseline")) == 300
'''

DEFAULT_RUN = r'''
import sys, tempfile, time
from kdcore import RunConfig
from kdcore.train.experiment import compare
from kdcore.history.store import RunStore
from kdcore.data import load_data
cfg = RunConfig(name="bench_store")
data = load_data(cfg.data)
store = RunStore(tempfile.mkdtemp()) if sys.argv[1] == "history" else None
t0 = time.perf_counter()
res = compare(cfg, seeds=[0, 1, 2], store=store, data=data)
print(time.perf_counter() - t0)
'''


def run(tree: Path, code: str, *args: str) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=tree, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return [float(v) for v in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", type=Path, help="another checkout to compare with, interleaved")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    trees = {"this tree": ROOT} | ({f"{args.against}": args.against} if args.against else {})
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    epoch: dict[str, list[list[float]]] = {k: [] for k in trees}
    whole: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for name, tree in trees.items():
            epoch[name].append(run(tree, PER_EPOCH))
            for mode in ("history", "none"):
                whole.setdefault((name, mode), []).append(run(tree, DEFAULT_RUN, mode)[0])
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print(f"median of {args.repeats} interleaved repeats\n")
    print("| tree | filing one epoch: wall ms | CPU ms | default run (3 seeds), with a history | without | history's share |")
    print("|---|---|---|---|---|---|")
    for name in trees:
        w = statistics.median(e[0] for e in epoch[name])
        c = statistics.median(e[1] for e in epoch[name])
        h, n = statistics.median(whole[(name, "history")]), statistics.median(whole[(name, "none")])
        print(f"| {name} | {w:.3f} | {c:.3f} | {h:.2f} s | {n:.2f} s | {(h - n) / h:.0%} |")


if __name__ == "__main__":
    main()
