"""Engine benchmark on the real Fashion-MNIST (issue 2's numbers). Prints a markdown table.

    python benchmarks/bench_engine.py            # all four measurements (~6-8 min on 2 cores)
    python benchmarks/bench_engine.py --quick    # epoch timings only

Setting: CNN teacher (~417k parameters), MLP 784-32-10 student, batch 128, Adam, 2 threads.
Epoch times are medians over interleaved repeats, so a busy machine slows A and B alike.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from kdcore import (DataConfig, LossConfig, ModelConfig, OptimConfig, RunConfig, compare,
                    replace)
from kdcore.data import batches, load_data
from kdcore.train.experiment import build_models
from kdcore.train.trainer import Alone, LogitDistiller, fit, make_generator, predict_logits

CFG = RunConfig(
    data=DataConfig(name="fashion_mnist"),
    teacher=ModelConfig("cnn", {"width": 16, "hidden": 256}),
    student=ModelConfig("mlp", {"hidden": [32]}),
    loss=LossConfig(name="kd", temperature=4.0, alpha=0.5),
    optim=OptimConfig(epochs=5, lr=1e-3, batch_size=128),
    teacher_optim=OptimConfig(epochs=3, lr=1e-3, batch_size=128),
)
ONE_EPOCH = replace(CFG.optim, epochs=1)


def bare_epoch(student, data, seed: int) -> float:
    """The reference: a plain PyTorch loop over the same in-memory tensors, same batches."""
    opt = torch.optim.Adam(student.parameters(), lr=CFG.optim.lr)
    gen = make_generator(seed)
    x_all, y_all = data.x_train, data.y_train
    t0 = time.perf_counter()
    student.train()
    for idx in batches(len(x_all), CFG.optim.batch_size, shuffle=True, generator=gen):
        x, y = x_all[idx], y_all[idx]
        loss = F.cross_entropy(student(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def engine_epoch(distiller, data, teacher_logits=None) -> float:
    """One epoch through kdcore's fit(), as fit() times it: training plus the validation pass."""
    ev = []
    fit(distiller, data, ONE_EPOCH, phase="bench", seed=0, teacher_logits=teacher_logits,
        callbacks=[lambda e: ev.append(e.seconds) if hasattr(e, "seconds") else None])
    return ev[0]


def fresh(cfg=CFG, data=None):
    return build_models(cfg, data.in_shape, 10)


def time_epochs(data, teacher, cache, repeats: int) -> dict[str, float]:
    cases = {
        "bare PyTorch loop (student alone)": lambda: bare_epoch(fresh(data=data)[1], data, 0),
        "kdcore fit: student alone": lambda: engine_epoch(Alone(fresh(data=data)[1]), data),
        "kdcore fit: distilled, cached teacher logits":
            lambda: engine_epoch(LogitDistiller(fresh(data=data)[1], teacher, CFG.loss), data, cache),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for k, f in cases.items():
            times[k].append(f())
    live = [engine_epoch(LogitDistiller(fresh(data=data)[1], teacher, CFG.loss), data, None)
            for _ in range(max(1, repeats // 3))]
    out = {k: statistics.median(v) for k, v in times.items()}
    out["kdcore fit: distilled, teacher run every step"] = statistics.median(live)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="epoch timings only")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    t = time.perf_counter()
    data = load_data(CFG.data)
    print(f"Fashion-MNIST loaded in {time.perf_counter() - t:.2f}s: train {len(data.x_train)}, "
          f"val {len(data.x_val)}, test {len(data.x_test)}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    teacher, student = fresh(data=data)
    print(f"teacher cnn: {sum(p.numel() for p in teacher.parameters()):,} parameters; "
          f"student mlp 784-32-10: {sum(p.numel() for p in student.parameters()):,} parameters")
    fit(Alone(teacher), data, replace(CFG.teacher_optim, epochs=1), phase="teacher", seed=0)
    teacher.eval()
    t = time.perf_counter()
    cache = predict_logits(teacher, data.x_train)
    cache_s = time.perf_counter() - t

    ep = time_epochs(data, teacher, cache, args.repeats)
    base = ep["kdcore fit: student alone"]
    bare = ep["bare PyTorch loop (student alone)"]
    cached = ep["kdcore fit: distilled, cached teacher logits"]
    live = ep["kdcore fit: distilled, teacher run every step"]
    print("\n| epoch (54k samples, batch 128) | seconds (median) |\n|---|---|")
    for k, v in ep.items():
        print(f"| {k} | {v:.3f} |")
    print(f"| computing the teacher-logit cache once | {cache_s:.3f} |")
    print("\n| requirement | measured | target | met |\n|---|---|---|---|")
    rows = [("engine epoch / bare loop epoch", base / bare, "<= 1.10", base / bare <= 1.10),
            ("distilled (cached) / student alone", cached / base, "<= 1.30", cached / base <= 1.30),
            ("teacher every step / cached", live / cached, ">= 10", live / cached >= 10)]
    if not args.quick:
        t = time.perf_counter()
        one = compare(CFG, seeds=[0])
        secs = time.perf_counter() - t
        rows.append(("compare, 3 teacher + 5 student epochs, 1 seed (s)", secs, "< 120", secs < 120))
        t = time.perf_counter()
        many = compare(CFG, seeds=range(args.seeds))
        secs3 = time.perf_counter() - t
        gain = many.gain_mean * 100
        rows.append((f"gain over baseline, {args.seeds} seeds (points)",
                     f"{gain:+.2f} ± {many.gain_std * 100:.2f}", "> 0", gain > 0))
    for name, val, target, ok in rows:
        v = f"{val:.2f}" if isinstance(val, float) else val
        print(f"| {name} | {v} | {target} | {'yes' if ok else 'NO'} |")
    if not args.quick:
        print("\n1-seed compare test accuracy: " + ", ".join(
            f"{r['model']} {r['accuracy_mean']:.4f}" for _, r in one.table.iterrows()))
        print(f"{args.seeds}-seed compare ({secs3:.0f}s), test accuracy mean ± std:")
        for _, r in many.table.iterrows():
            print(f"  {r['model']:9s} {r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}")
        print("  per-seed gains (points): " + ", ".join(f"{r.gain * 100:+.2f}" for r in many.runs))


if __name__ == "__main__":
    main()
