"""Every preset over three seeds, its measured effect written next to its claim (issue 9).

    python benchmarks/presets.py              # all presets, seeds 0,1,2; writes docs/presets.md
    python benchmarks/presets.py --jobs 12    # the (run, seed) cells in parallel processes

1. The default synthetic run (the Train page's defaults = ``python -m kdcore config``) once per
   seed, each with its own teacher, as a user pressing Start with that seed would: its verdict.
2. Each Fashion-MNIST preset run (kdcore/lab/presets.py) over the seeds, all from one teacher trained
   once (seed 0; the presets share its config), with each seed's paired gain and interval.
3. The few-labels preset end to end in one process with a fresh teacher, timed (wall clock),
   with the load average: the "about 2 minutes" on the page.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _init(threads: int, data_dir: str | None, quick: bool = False) -> None:
    import torch

    torch.set_num_threads(threads)
    if data_dir:
        os.environ["KD_DATA_DIR"] = data_dir
    if quick:
        os.environ["KD_PRESETS_QUICK"] = "1"


def _shrink(cfg):
    """--quick: 3,000 training images, 1 teacher epoch, 2 student epochs (checks the script, not the claims)."""
    import dataclasses

    from kdcore import replace

    if not os.environ.get("KD_PRESETS_QUICK") or cfg.data.name != "fashion_mnist":
        return cfg
    return replace(cfg, data=dataclasses.replace(cfg.data, train_subset=3000),
                   optim=dataclasses.replace(cfg.optim, epochs=2),
                   teacher_optim=dataclasses.replace(cfg.teacher_optim, epochs=1))


def default_run(seed: int) -> dict:
    from kdcore import RunConfig, replace, run_experiment

    cfg = replace(RunConfig(), seed=seed)
    if os.environ.get("KD_PRESETS_QUICK"):
        cfg = replace(cfg, optim=replace(cfg.optim, epochs=5))
    r = run_experiment(cfg)
    d = r.metrics.get("distilled", {})
    return {"seed": seed, "status": r.status, "message": r.message, "seconds": r.seconds,
            "gain": d.get("gain"), "low": d.get("gain_ci_low"), "high": d.get("gain_ci_high")}


def train_teacher(job: tuple) -> tuple[str, float]:
    tmp, seed = job
    import torch

    from kdcore.data import load_data
    from kdcore.train.experiment import build_models
    from kdcore.lab.presets import run_presets
    from kdcore.train.trainer import Alone, fit

    cfg = _shrink(run_presets()[0].runs[0][1])
    data = load_data(cfg.data)
    teacher, _ = build_models(cfg, tuple(data.in_shape), len(data.classes))
    r = fit(Alone(teacher), data, cfg.teacher_optim, phase="teacher", seed=seed)
    assert r.status == "completed", r.message
    path = os.path.join(tmp, "teacher.pt")
    torch.save(teacher.state_dict(), path)
    with torch.no_grad():
        acc = (teacher.eval()(data.x_test).argmax(1) == data.y_test).double().mean().item()
    return path, acc


def preset_cell(job: tuple) -> dict:
    key, i, seed, teacher_path = job
    import torch

    from kdcore import replace, run_experiment
    from kdcore.data import load_data
    from kdcore.train.experiment import build_models
    from kdcore.lab.presets import run_presets

    preset = {p.key: p for p in run_presets()}[key]
    label, cfg = preset.runs[i]
    cfg = _shrink(replace(cfg, seed=seed))
    data = load_data(cfg.data)
    teacher, _ = build_models(cfg, tuple(data.in_shape), len(data.classes))
    teacher.load_state_dict(torch.load(teacher_path, weights_only=True))
    r = run_experiment(cfg, data=data, reuse={"teacher": teacher})
    assert r.status == "completed", r.message
    d = r.metrics["distilled"]
    return {"key": key, "run": i, "label": label, "seed": seed, "baseline": r.metrics["baseline"]["accuracy"],
            "distilled": d["accuracy"], "gain": d["gain"], "low": d["gain_ci_low"], "high": d["gain_ci_high"],
            "pseudo": r.metrics.get("pseudo", {}).get("accuracy"), "teacher": r.metrics["teacher"]["accuracy"],
            "message": r.message}


def timed_preset() -> dict:
    from kdcore import run_experiment
    from kdcore.lab.presets import run_presets

    cfg = run_presets()[0].runs[0][1]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    r = run_experiment(cfg)
    return {"seconds": time.perf_counter() - t0, "load_before": load0, "load_after": os.getloadavg()[0],
            "status": r.status, "message": r.message,
            "phases": {p: round(sum(e["seconds"] for e in h), 1) for p, h in r.history.items()}}


def judge(key: str, cells: list[dict]) -> tuple[bool, str]:
    """Does the preset's claim hold in these cells? Returns (holds, what was measured)."""
    from kdcore.stats import seed_interval

    by_run: dict[int, list[dict]] = {}
    for c in sorted(cells, key=lambda c: c["seed"]):
        by_run.setdefault(c["run"], []).append(c)

    def gains(run):
        return [c["gain"] * 100 for c in by_run[run]]

    def iv_text(g):
        iv = seed_interval(g)
        return (f"{iv['mean']:+.2f} ± {iv['std']:.2f} points (95 % CI {iv['ci_low']:+.2f} to "
                f"{iv['ci_high']:+.2f}; per seed {', '.join(f'{x:+.2f}' for x in g)})"), iv

    if key == "few_labels":
        cs = by_run[0]
        sure = sum(c["low"] > 0 for c in cs)
        txt, _ = iv_text(gains(0))
        per = "; ".join(f"seed {c['seed']}: {c['gain'] * 100:+.2f} (CI {c['low'] * 100:+.2f} to "
                        f"{c['high'] * 100:+.2f})" for c in cs)
        return sure == len(cs), f"gain {txt}; each seed's paired interval: {per}; excludes 0 on {sure}/{len(cs)}"
    if key == "t1_t10":
        (t1, iv1), (t10, iv10) = iv_text(gains(0)), iv_text(gains(1))
        return (iv1["ci_low"] > 0 and iv10["ci_low"] <= 0 <= iv10["ci_high"],
                f"T = 1: {t1}; T = 10: {t10}")
    if key == "a0_a1":
        (t0, iv0) = iv_text(gains(0))
        exact = all(c["gain"] == 0 and c["distilled"] == c["baseline"] for c in by_run[1])
        return (iv0["ci_low"] > 0 and exact,
                f"α = 0: {t0}; α = 1: gain exactly 0 on {sum(c['gain'] == 0 for c in by_run[1])}/"
                f"{len(by_run[1])} seeds")
    if key == "tiny_student":
        diff = [a - b for a, b in zip(gains(0), gains(1))]
        (t3, _), (t16, _), (td, ivd) = iv_text(gains(0)), iv_text(gains(1)), iv_text(diff)
        return ivd["mean"] > 0, f"T = 3: {t3}; T = 16: {t16}; T = 3 minus T = 16: {td}"
    return False, "no check written for this preset"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--data-dir", default=None, help="folder holding FashionMNIST/raw (else the defaults)")
    p.add_argument("--skip-timing", action="store_true", help="leave out the timed end-to-end preset run")
    p.add_argument("--quick", action="store_true", help="tiny versions of every run, seed 0: checks the script only")
    p.add_argument("--only-timing", action="store_true",
                   help="only the timed end-to-end few-labels run; appends its line to --out")
    p.add_argument("--out", default=str(ROOT / "docs" / "presets.md"))
    args = p.parse_args()
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    if args.only_timing:
        _init(2, args.data_dir)
        tm = timed_preset()
        line = (f"\n## Time of the few-labels preset, end to end, on the 2-core development machine\n\n"
                f"`python benchmarks/presets.py --only-timing`: one run with a fresh teacher in one process, "
                f"2 torch threads: **{tm['seconds']:.0f} s** (load average {tm['load_before']:.1f} before, "
                f"{tm['load_after']:.1f} after, {os.cpu_count()} cores, torch {__import__('torch').__version__}); "
                f"seconds per phase {tm['phases']}.\n")
        print(line)
        with open(args.out, "a") as f:
            f.write(line)
        return 0
    from kdcore.lab.presets import run_presets

    presets = run_presets()
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, ctx.Pool(args.jobs, initializer=_init,
                                                        initargs=(1, args.data_dir, args.quick)) as pool:
        teacher = pool.apply_async(train_teacher, ((tmp, 0),))
        defaults = pool.map(default_run, seeds)
        for d in defaults:
            print(f"default run, seed {d['seed']}: {d['message']}", flush=True)
        path, t_acc = teacher.get()
        print(f"shared Fashion-MNIST teacher: {t_acc * 100:.2f} %", flush=True)
        jobs = [(pr.key, i, s, path) for pr in presets for i in range(len(pr.runs)) for s in seeds]
        cells = []
        for c in pool.imap_unordered(preset_cell, jobs):
            cells.append(c)
            print(f"{c['key']} / {c['label']} / seed {c['seed']}: baseline {c['baseline'] * 100:.2f}, "
                  f"distilled {c['distilled'] * 100:.2f}, gain {c['gain'] * 100:+.2f}", flush=True)
    _init(1, args.data_dir)
    timing = None if args.skip_timing or args.quick else timed_preset()
    total = time.perf_counter() - t0

    helped = sum(d["low"] is not None and d["low"] > 0 for d in defaults)
    lines = ["# Presets: each claim and what was measured", "",
             f"Command: `python benchmarks/presets.py {' '.join(sys.argv[1:])}`".rstrip() + " "
             f"({total / 60:.1f} min, {os.cpu_count()} cores, {args.jobs} process(es) x 1 thread, "
             f"torch {__import__('torch').__version__}). Seeds {', '.join(map(str, seeds))}.", "",
             "## The default run (Train page defaults = `python -m kdcore config`)", "",
             "Two moons, teacher MLP 2-128-128-2 on all 1,440 training points, student MLP 2-8-2 with 16 "
             "labels (8 per class) and the rest as a transfer set, T = 4, α = 0.5, 200 epochs of batch 8. "
             f"Claim: the verdict says \"helped\" with a 95 % interval that excludes 0. Holds on "
             f"**{helped} of {len(defaults)}** seeds:", ""]
    lines += [f"- seed {d['seed']}: {d['message']}" for d in defaults]
    lines += ["", "## Fashion-MNIST presets", "",
              f"One teacher for all (MLP 784-256-256-10, 8 epochs on all 54,000 training images, seed 0): "
              f"{t_acc * 100:.2f} % test accuracy. Each seed trains the students from the same teacher.", ""]
    for pr in presets:
        mine = [c for c in cells if c["key"] == pr.key]
        holds, measured = judge(pr.key, mine)
        lines += [f"### {pr.title}", "", f"Claim: {pr.claim}", "",
                  f"Measured: {measured}.", "", f"**Holds: {'yes' if holds else 'NO'}**", ""]
        for i, (label, _) in enumerate(pr.runs):
            rs = sorted((c for c in mine if c["run"] == i), key=lambda c: c["seed"])
            accs = ", ".join(f"{c['baseline'] * 100:.2f} → {c['distilled'] * 100:.2f}" for c in rs)
            lines.append(f"- {label}: baseline → distilled per seed: {accs}"
                         + (", hard-label arm " + ", ".join(f"{c['pseudo'] * 100:.2f}" for c in rs)
                            if rs and rs[0]["pseudo"] is not None else ""))
        lines.append("")
    if timing:
        lines += ["## Time of the few-labels preset, end to end", "",
                  f"One run with a fresh teacher in one process: **{timing['seconds']:.0f} s** "
                  f"(load average {timing['load_before']:.1f} before, {timing['load_after']:.1f} after, "
                  f"on {os.cpu_count()} cores); per phase {timing['phases']}. {timing['message']}", ""]
    if not args.quick:
        Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
