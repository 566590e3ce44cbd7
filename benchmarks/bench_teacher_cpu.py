"""Teacher training on the CPU: kdcore's fit() against a bare loop, and what channels-last and
torch.compile change (issue 13, item 3). Prints a markdown table and a profile of one epoch.

    python benchmarks/bench_teacher_cpu.py                  # 12,800 samples (100 steps) per epoch
    python benchmarks/bench_teacher_cpu.py --samples 0      # the whole 54k training set

Setting: Fashion-MNIST, the CNN teacher (~417k parameters, width 16, hidden 256), batch 128, Adam
lr 1e-3, --threads torch threads (default 1). Every row starts from the same weights and sees the
same batches; rows run interleaved over --rounds rounds; medians of CPU and wall seconds per epoch.
torch.compile's first epoch includes its compile time and is reported apart.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import time

import torch
import torch.nn.functional as F

from kdcore import DataConfig, OptimConfig
from kdcore.data import load_data
from kdcore.models import build_model
from kdcore.train.trainer import Alone, fit

LR, BATCH = 1e-3, 128


def clocks() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def bare_epochs(model, data, epochs: int, *, channels_last=False, compiled=False):
    """A plain loop over in-memory tensors (kdcore's batch order); returns per-epoch (cpu, wall)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compiled else model
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(0)
    x_all, y_all, n = data.x_train, data.y_train, len(data.x_train)
    out = []
    for _ in range(epochs):
        c0, w0 = clocks()
        model.train()
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, BATCH):
            idx = order[start:start + BATCH]
            x, y = x_all[idx], y_all[idx]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(step_model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        c1, w1 = clocks()
        out.append((c1 - c0, w1 - w0))
    return out


def kdcore_epochs(model, data, epochs: int):
    """fit() on the same data with the validation set emptied, so it times the same work as the loop."""
    marks = []
    fit(Alone(model), data, OptimConfig(epochs=epochs, lr=LR, batch_size=BATCH), phase="teacher", seed=0,
        callbacks=[lambda ev: marks.append(clocks()) if type(ev).__name__ in ("PhaseStart", "EpochEnd") else None])
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]


def cache_table(data, rounds: int) -> None:
    """CPU time of kdcore's teacher-logit cache (predict_logits over the training set) by batch size."""
    from kdcore.train.trainer import predict_logits

    torch.manual_seed(0)
    teacher = build_model("cnn", in_shape=data.in_shape, num_classes=10, params={"width": 16, "hidden": 256}).eval()
    cases = {f"batch {bs}": (bs, False) for bs in (128, 256, 1024)}
    cases["batch 1024, channels-last"] = (1024, True)
    times: dict[str, list[float]] = {k: [] for k in cases}
    ref = predict_logits(teacher, data.x_train, batch_size=128)
    worst = 0.0
    for _ in range(rounds):
        for name, (bs, cl) in cases.items():
            teacher.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            c0 = time.process_time()
            out = predict_logits(teacher, data.x_train, batch_size=bs)
            times[name].append(time.process_time() - c0)
            worst = max(worst, (out - ref).abs().max().item())
    print(f"\nteacher-logit cache over {len(data.x_train)} samples, {rounds} interleaved rounds, "
          f"load after {os.getloadavg()[0]:.2f}; largest logit difference between rows {worst:.1e}\n")
    print("| predict_logits | CPU s (median) |\n|---|---|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=12800, help="training samples per epoch (0 = all 54k)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per row and round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile row")
    ap.add_argument("--cache-only", action="store_true",
                    help="only time the teacher-logit cache (predict_logits) at several batch sizes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data(DataConfig(name="fashion_mnist", train_subset=args.samples))
    if args.cache_only:
        return cache_table(data, args.rounds)
    # empty validation set: fit() then times training only, like the bare loop
    data = dataclasses.replace(data, x_val=data.x_val[:0], y_val=data.y_val[:0])
    print(f"Fashion-MNIST: {len(data.x_train)} training samples per epoch, batch {BATCH}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s); load before {os.getloadavg()[0]:.2f}")
    rows = {
        "kdcore fit()": lambda m: kdcore_epochs(m, data, args.epochs),
        # weights in channels-last before fit(): mkldnn keeps activations in that layout
        "kdcore fit(), model in channels-last": lambda m: kdcore_epochs(m.to(memory_format=torch.channels_last),
                                                                        data, args.epochs),
        "bare loop": lambda m: bare_epochs(m, data, args.epochs),
        "bare loop, channels-last": lambda m: bare_epochs(m, data, args.epochs, channels_last=True),
    }
    if not args.no_compile:
        rows["bare loop, torch.compile"] = lambda m: bare_epochs(m, data, args.epochs, compiled=True)
    times = {k: {"cpu": [], "wall": [], "first": []} for k in rows}
    for r in range(args.rounds):
        torch.manual_seed(r)
        init = build_model("cnn", in_shape=data.in_shape, num_classes=10, params={"width": 16, "hidden": 256})
        for name, fn in rows.items():
            per_epoch = fn(copy.deepcopy(init))
            if name.endswith("torch.compile"):  # its first epoch pays the compile
                times[name]["first"].append(per_epoch[0][1])
                per_epoch = per_epoch[1:] or per_epoch
            times[name]["cpu"] += [c for c, _ in per_epoch]
            times[name]["wall"] += [w for _, w in per_epoch]
            print(f"  round {r + 1} {name}: {statistics.median(c for c, _ in per_epoch):.2f} CPU-s/epoch", flush=True)
    bare = statistics.median(times["bare loop"]["cpu"])
    print(f"\nload after {os.getloadavg()[0]:.2f}; {args.rounds} rounds x {args.epochs} epochs\n")
    print("| teacher epoch | CPU s (median) | wall s (median) | CPU x bare loop |\n|---|---|---|---|")
    for name, t in times.items():
        c, w = statistics.median(t["cpu"]), statistics.median(t["wall"])
        extra = f" (first epoch with compiling: {statistics.median(t['first']):.1f} s wall)" if t["first"] else ""
        print(f"| {name}{extra} | {c:.2f} | {w:.2f} | {c / bare:.2f} |")

    # where one bare-loop epoch's time goes
    from torch.profiler import ProfilerActivity, profile

    model = build_model("cnn", in_shape=data.in_shape, num_classes=10, params={"width": 16, "hidden": 256})
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        bare_epochs(model, data, 1)
    print("\nprofile of one bare-loop teacher epoch (top ops by self CPU time):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
