"""GPU check of kdcore's training loop (issue 13, item 5): correctness on the device, then epoch times.

    python3 benchmarks/gpu_check.py                        # on a GPU machine: under 5 minutes
    python3 benchmarks/gpu_check.py --data DIR             # real Fashion-MNIST IDX files (.gz or not) in DIR
    python3 benchmarks/gpu_check.py --device cpu --quick   # the same code on the CPU, small (a smoke test)
    python3 benchmarks/gpu_check.py --device cpu --threads 1 --only fmnist   # the CPU column of the docs

Needs torch and pandas only (no torchvision, no streamlit, no network). Two setups:

* ``fmnist``: the CPU benchmark's setup: CNN teacher (width 16, hidden 256, 417k parameters) ->
  MLP 784-32-10, batch 128, Adam lr 1e-3, KD T=4 alpha=0.5, 54k training samples. With ``--data``
  these are the real Fashion-MNIST images and test accuracies are printed; otherwise they are
  random tensors of the same shape (timing only, accuracies not printed).
* ``cifar``: a CIFAR-size ResNet-32 teacher (0.46M parameters) -> ResNet-8 student, 54k random
  3x32x32 tensors (timing only), batch 128, SGD lr 0.05.

Every time is a median of per-epoch wall times that kdcore's ``fit`` reports (``EpochEnd.seconds``:
the training steps plus the validation pass, which brings the logits to the host, so the GPU has
finished the epoch when the clock stops); the first epoch (cuDNN autotuning, compilation) is
reported apart. The checks before the timings compare the device against the CPU and the
resident-data path against the streamed one; ``tests/test_gpu.py`` runs the same checks under
pytest. With 2+ GPUs a 2-process DDP (NCCL) KD epoch is timed too (with gloo under ``--device cpu --quick``).
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import platform
import statistics
import struct
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

from kdcore.train import trainer
from kdcore.config import LossConfig, OptimConfig
from kdcore.data import DataBundle
from kdcore.events import EpochEnd, StepEnd
from kdcore.models import build_model, count_params
from kdcore.train.trainer import Alone, LogitDistiller, fit, predict_logits

KD = LossConfig(name="kd", temperature=4.0, alpha=0.5)
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]


# --------------------------------------------------------------------------------------------
# Data: real Fashion-MNIST from IDX files, or random tensors of the same shapes


def _read_idx(path: Path) -> torch.Tensor:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for base in (folder, folder / "FashionMNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (base / name).is_file():
                return base / name
    return None


def _bundle(name: str, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
            n_val: int, classes: list[str], source: str) -> DataBundle:
    """Split a seeded validation share off the training tensors, as kdcore does."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    val, train = order[:n_val], order[n_val:]
    return DataBundle(name=name, kind="image", x_train=x[train], y_train=y[train], x_val=x[val],
                      y_val=y[val], x_test=x_test, y_test=y_test, classes=classes,
                      in_shape=tuple(x.shape[1:]), mean=(0.0,) * x.shape[1], std=(1.0,) * x.shape[1],
                      source=source)


def fashion_mnist(data_dir: str | None, n_train: int) -> DataBundle:
    """Fashion-MNIST from IDX files in ``data_dir`` (or its FashionMNIST/raw), else random tensors.

    Args:
        data_dir: a folder with train-images-idx3-ubyte[.gz] and the three other IDX files, or None.
        n_train: training + validation samples to keep (60000 = all).
    Returns:
        A DataBundle; ``source`` says which it is.
    """
    if data_dir:
        folder = Path(data_dir)
        stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")
        paths = [_find_idx(folder, s) for s in stems]
        if all(paths):
            xs, ys, xt, yt = (_read_idx(p) for p in paths)
            x = (xs[:n_train].float().div(255) - 0.2860) / 0.3530  # Fashion-MNIST's mean/std
            x_test = (xt.float().div(255) - 0.2860) / 0.3530
            return _bundle("fashion_mnist", x.unsqueeze(1), ys[:n_train].long(), x_test.unsqueeze(1),
                           yt.long(), n_train // 10, FASHION_CLASSES, f"Fashion-MNIST IDX files in {folder}")
        print(f"no Fashion-MNIST IDX files in {folder}: using random tensors")
    return random_images("fashion_mnist (random tensors)", n_train, (1, 28, 28), 10)


def random_images(name: str, n: int, shape: tuple[int, ...], k: int) -> DataBundle:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    n_test = max(n // 6, 1)
    return _bundle(name, x, y, x[:n_test].clone(), y[:n_test].clone(), n // 10, [str(i) for i in range(k)],
                   "random tensors (timing only)")


def learnable(n: int = 2048, d: int = 20, k: int = 4, seed: int = 0) -> DataBundle:
    """A small set a linear model can learn (labels from a random linear map): for the checks."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, k, generator=g)).argmax(1)
    b = _bundle("learnable", x, y, x[:256].clone(), y[:256].clone(), n // 8, [str(i) for i in range(k)],
                "synthetic")
    return DataBundle(**{**b.__dict__, "kind": "2d"})


# --------------------------------------------------------------------------------------------
# Correctness checks (each returns a one-line result; tests/test_gpu.py asserts on them)


def _mlp(data: DataBundle, hidden=(32,), seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", in_shape=tuple(data.in_shape), num_classes=len(data.classes),
                       params={"hidden": list(hidden)})


def _run(device, data, *, precision="fp32", epochs=2, seed=0, kd=False, events=None, stop=None,
         lr=1e-2, compile=False):
    """Train an MLP student (alone, or distilled from a fixed MLP teacher) and return (result, student)."""
    student = _mlp(data, seed=seed)
    cfg = OptimConfig(epochs=epochs, lr=lr, batch_size=64, precision=precision, compile=compile)
    cbs = [events.append] if events is not None else []
    if kd:
        teacher = _mlp(data, hidden=(64,), seed=seed + 100)
        dist = LogitDistiller(student, teacher, KD)
    else:
        dist = Alone(student)
    r = fit(dist, data, cfg, phase="check", seed=seed, device=device, callbacks=cbs, stop=stop)
    return r, student.cpu()


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p.detach().cpu() - q.detach().cpu()).abs().max().item()
               for p, q in zip(a.parameters(), b.parameters()))


def check_device_matches_cpu(device) -> tuple[bool, str]:
    """fp32 KD on the device ends where the CPU ends (same init, same batches), to float tolerance."""
    data = learnable()
    r_cpu, s_cpu = _run("cpu", data, kd=True)
    r_dev, s_dev = _run(device, data, kd=True)
    d_loss = max(abs(a["train_loss"] - b["train_loss"]) for a, b in zip(r_cpu.epochs, r_dev.epochs))
    d_w = _max_diff(s_cpu, s_dev)
    ok = r_dev.status == "completed" and d_loss < 1e-3 and d_w < 1e-3
    return ok, f"device vs cpu, 2 KD epochs: max |loss diff| {d_loss:.2e}, max |weight diff| {d_w:.2e}"


def check_resident_matches_streamed(device) -> tuple[bool, str]:
    """Data kept on the device and data copied per step give the same run."""
    data = learnable()
    saved = trainer._fits_on
    try:
        trainer._fits_on = lambda *a: False
        r_s, s_s = _run(device, data, kd=True)
        trainer._fits_on = lambda *a: True
        r_r, s_r = _run(device, data, kd=True)
    finally:
        trainer._fits_on = saved
    d_w = _max_diff(s_s, s_r)
    same_loss = [e["train_loss"] for e in r_s.epochs] == [e["train_loss"] for e in r_r.epochs]
    ok = d_w < 1e-6 and same_loss
    return ok, f"resident vs streamed data: max |weight diff| {d_w:.2e}, identical epoch losses {same_loss}"


def check_events(device) -> tuple[bool, str]:
    """Every step reaches the callbacks once, in order, with finite numbers, even when synced in blocks."""
    data = learnable()
    events: list = []
    r, _ = _run(device, data, kd=True, events=events)
    steps = [e.step for e in events if isinstance(e, StepEnd)]
    per_epoch = -(-len(data.x_train) // 64)
    ends = [e for e in events if isinstance(e, EpochEnd)]
    finite = all(torch.isfinite(torch.tensor([e.loss, *e.terms.values()])).all() for e in events
                 if isinstance(e, StepEnd))
    ok = steps == list(range(1, 2 * per_epoch + 1)) and len(ends) == 2 and finite
    return ok, f"events: {len(steps)} StepEnd for {2 * per_epoch} steps, in order and finite: {ok}"


def check_diverged(device) -> tuple[bool, str]:
    """A NaN in the data is reported as diverged at the step where it first appears."""
    data = learnable()
    x = data.x_train.clone()
    order = torch.randperm(len(x), generator=trainer.make_generator(0))
    x[order[64 * 6]] = float("nan")  # first seen in step 7 of epoch 1
    bad = DataBundle(**{**data.__dict__, "x_train": x})
    r, _ = _run(device, bad)
    ok = r.status == "diverged" and "step 7;" in r.message and "epoch 1" in r.message
    return ok, f"NaN at step 7: status {r.status}, message {r.message!r}"


def check_stop(device) -> tuple[bool, str]:
    """A stop request from another thread ends the run within a step or two."""
    data = learnable(n=16384)
    stop = threading.Event()
    events: list = []
    seen = threading.Event()

    def cb(ev):
        events.append(ev)
        if isinstance(ev, StepEnd):
            seen.set()

    student = _mlp(data)
    cfg = OptimConfig(epochs=50, lr=1e-2, batch_size=64)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", fit(Alone(student), data, cfg, phase="check", seed=0,
                                                                 device=device, callbacks=[cb], stop=stop)))
    t.start()
    seen.wait(60)
    t0 = time.perf_counter()
    stop.set()
    t.join(60)
    took = time.perf_counter() - t0
    r = box.get("r")
    ok = r is not None and r.status == "stopped" and took < 2.0
    return ok, f"stop: status {r.status if r else None} {took * 1000:.0f} ms after the request"


def check_amp(device, precision: str) -> tuple[bool, str]:
    """KD under autocast trains: finite, and validation accuracy within 3 points of fp32."""
    data = learnable()
    r32, _ = _run(device, data, kd=True, epochs=3)
    r16, _ = _run(device, data, kd=True, epochs=3, precision=precision)
    a32, a16 = r32.epochs[-1]["val_acc"], r16.epochs[-1]["val_acc"]
    ok = r16.status == "completed" and abs(a32 - a16) <= 0.03
    return ok, f"{precision} autocast: val acc {a16:.3f} vs fp32 {a32:.3f}"


def check_compile(device) -> tuple[bool, str]:
    """torch.compile'd training gives the eager run's numbers (to float tolerance)."""
    data = learnable()
    r_e, s_e = _run(device, data, kd=True)
    r_c, s_c = _run(device, data, kd=True, compile=True)
    d_w = _max_diff(s_e, s_c)
    ok = r_c.status == "completed" and d_w < 1e-3
    return ok, f"torch.compile vs eager: max |weight diff| {d_w:.2e}"


def run_checks(device, *, with_compile: bool) -> bool:
    checks = [check_device_matches_cpu, check_resident_matches_streamed, check_events, check_diverged,
              check_stop, lambda d: check_amp(d, "bf16")]
    if torch.device(device).type == "cuda":
        checks.append(lambda d: check_amp(d, "fp16"))
    if with_compile:
        checks.append(check_compile)
    all_ok = True
    for c in checks:
        try:
            ok, line = c(device)
        except Exception as e:  # report and go on: the timings are still worth having
            ok, line = False, f"{getattr(c, '__name__', 'check')} raised {type(e).__name__}: {e}"
            traceback.print_exc()
        all_ok &= ok
        print(f"  [{'ok' if ok else 'FAIL'}] {line}", flush=True)
    return all_ok


# --------------------------------------------------------------------------------------------
# Timings


def _epochs(result) -> tuple[float, float]:
    """(first epoch seconds, median of the later epochs' seconds)."""
    s = [e["seconds"] for e in result.epochs]
    return s[0], statistics.median(s[1:] if len(s) > 1 else s)


def _row(label: str, result, extra: str = "") -> None:
    if result.status != "completed":
        print(f"| {label} | {result.status} | | {result.message} |", flush=True)
        return
    first, steady = _epochs(result)
    print(f"| {label} | {steady:.3f} | {first:.3f} | {extra} |", flush=True)


def bare_epochs(student, data, device, epochs: int, batch_size: int, lr: float,
                cache: torch.Tensor | None) -> tuple[float, float]:
    """The floor on the device: a plain loop over resident tensors, same batches and fused Adam as fit,
    KD (T=4, alpha=0.5) when ``cache`` is given, the same validation pass; no events, no checks.

    Returns:
        (first epoch seconds, median of the later epochs' seconds).
    """
    import torch.nn.functional as F

    device = torch.device(device)
    cuda = device.type == "cuda"
    student.to(device).train()
    opt = torch.optim.Adam(student.parameters(), lr=lr, **({"fused": True} if cuda else {}))
    x, y, x_val = data.x_train.to(device), data.y_train.to(device), data.x_val.to(device)
    t_all = cache.to(device) if cache is not None else None
    gen, n, T, a = trainer.make_generator(0), len(x), KD.temperature, KD.alpha
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            out = student(x[idx])
            loss = F.cross_entropy(out, y[idx])
            if t_all is not None:
                kl = F.kl_div(F.log_softmax(out / T, 1), F.log_softmax(t_all[idx] / T, 1), reduction="batchmean",
                              log_target=True)
                loss = a * loss + (1 - a) * T * T * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        predict_logits(student, x_val, device=device)  # fit's validation pass; its .cpu() waits for the GPU
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times[0], statistics.median(times[1:] if len(times) > 1 else times)


@contextlib.contextmanager
def patched(**attrs):
    """Swap kdcore.train.trainer attributes for an ablation row, then put them back."""
    saved = {k: getattr(trainer, k) for k in attrs}
    try:
        for k, v in attrs.items():
            setattr(trainer, k, v)
        yield
    finally:
        for k, v in saved.items():
            setattr(trainer, k, v)


def _accuracy(model, data, device) -> float:
    logits = predict_logits(model, data.x_test, device=device)
    return (logits.argmax(1) == data.y_test).float().mean().item()


def time_setup(name: str, data: DataBundle, teacher_spec, student_spec, optim: OptimConfig, device,
               precisions, *, epochs: int, compile_teacher: bool, real: bool, extras: bool = False,
               diagnose: bool = False) -> None:
    in_shape, k = tuple(data.in_shape), len(data.classes)

    def model(spec, seed):
        torch.manual_seed(seed)
        return build_model(spec[0], in_shape=in_shape, num_classes=k, params=spec[1])

    t_cnt, s_cnt = count_params(model(teacher_spec, 0)), count_params(model(student_spec, 0))
    print(f"\n### {name}: {teacher_spec[0]} teacher ({t_cnt:,} params) -> {student_spec[0]} student "
          f"({s_cnt:,} params), {len(data.x_train)} training samples, batch {optim.batch_size}, "
          f"{data.source}\n")
    print("| epoch | median s | first epoch s | note |\n|---|---|---|---|")
    one = lambda p, **kw: OptimConfig(**{**optim.__dict__, "epochs": epochs, "precision": p, **kw})  # noqa: E731
    teacher = None
    for p in precisions:
        t = model(teacher_spec, 0)
        r = fit(Alone(t), data, one(p), phase="teacher", seed=0, device=device)
        acc = f"test acc {_accuracy(t, data, device):.4f}" if real else ""
        _row(f"teacher alone, {p}", r, acc)
        if p == "fp32":
            teacher = t.eval()
    t0 = time.perf_counter()
    cache = predict_logits(teacher, data.x_train, device=device)
    cache_s = time.perf_counter() - t0
    for p in precisions:
        s = model(student_spec, 1)
        r = fit(Alone(s), data, one(p), phase="baseline", seed=0, device=device)
        _row(f"student alone, {p}", r, f"test acc {_accuracy(s, data, device):.4f}" if real else "")
        s = model(student_spec, 1)
        r = fit(LogitDistiller(s, teacher, KD), data, one(p), phase="distilled", seed=0, device=device,
                teacher_logits=cache)
        _row(f"KD, cached teacher logits, {p}", r,
             f"test acc {_accuracy(s, data, device):.4f}" if real else "")
        s = model(student_spec, 1)
        r = fit(LogitDistiller(s, teacher, KD), data, one(p), phase="distilled", seed=0, device=device)
        _row(f"KD, teacher run every step, {p}", r,
             f"test acc {_accuracy(s, data, device):.4f}" if real else "")
    print(f"| computing the teacher-logit cache once | {cache_s:.3f} | | |")
    try:
        _extra_rows(data, device, model, teacher_spec, student_spec, teacher, cache, optim, one, precisions,
                    epochs=epochs, real=real, extras=extras, diagnose=diagnose)
    except Exception as e:  # an extra row must not cost the rows after it
        traceback.print_exc()
        print(f"| extra rows | failed | | {type(e).__name__}: {str(e)[:200]} |")
    if compile_teacher:
        try:
            t = model(teacher_spec, 0)
            r = fit(Alone(t), data, one("fp32", compile=True), phase="teacher", seed=0, device=device)
            _row("teacher alone, fp32, torch.compile", r, "first epoch includes compiling")
        except Exception as e:
            print(f"| teacher alone, fp32, torch.compile | failed | | {type(e).__name__}: {str(e)[:200]} |")


def _extra_rows(data, device, model, teacher_spec, student_spec, teacher, cache, optim, one, precisions, *,
                epochs: int, real: bool, extras: bool, diagnose: bool) -> None:
    """Rows beyond the main table: the bare loops, what each device change buys, a big batch (``extras``);
    cudnn.benchmark off and fused SGD under fp16 (``diagnose``)."""
    if extras:
        on = torch.device(device)
        f, m = bare_epochs(model(student_spec, 1), data, on, epochs, optim.batch_size, optim.lr, None)
        print(f"| bare loop on the device, student alone, fp32 | {m:.3f} | {f:.3f} | floor for 'student alone' |")
        f, m = bare_epochs(model(student_spec, 1), data, on, epochs, optim.batch_size, optim.lr, cache)
        print(f"| bare loop on the device, KD cached, fp32 | {m:.3f} | {f:.3f} | floor for 'KD, cached' |")
        for label, attrs in (("KD cached, fp32, a host sync every step (no blocks)", {"_defer_sync": lambda d: False}),
                             ("KD cached, fp32, data copied every step (not resident)", {"_fits_on": lambda *a: False})):
            with patched(**attrs):
                s = model(student_spec, 1)
                r = fit(LogitDistiller(s, teacher, KD), data, one("fp32"), phase="distilled", seed=0,
                        device=device, teacher_logits=cache)
            _row(label, r, "ablation")
        for p in precisions[:2]:
            big = one(p, batch_size=1024, lr=optim.lr * 4)
            t = model(teacher_spec, 0)
            _row(f"teacher alone, {p}, batch 1024", fit(Alone(t), data, big, phase="teacher", seed=0, device=device),
                 f"test acc {_accuracy(t, data, device):.4f}" if real else "")
            s = model(student_spec, 1)
            _row(f"KD, cached teacher logits, {p}, batch 1024",
                 fit(LogitDistiller(s, teacher, KD), data, big, phase="distilled", seed=0, device=device,
                     teacher_logits=cache), f"test acc {_accuracy(s, data, device):.4f}" if real else "")
    if diagnose and torch.device(device).type == "cuda":  # what two of fit's CUDA defaults buy
        with patched(CUDNN_BENCHMARK=False):
            t = model(teacher_spec, 0)
            _row("teacher alone, fp32, cudnn.benchmark off", fit(Alone(t), data, one("fp32"), phase="teacher",
                                                                  seed=0, device=device), "ablation")
        fused_sgd = lambda params, cfg, dev: torch.optim.SGD(  # noqa: E731
            params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay, fused=True)
        with patched(_optimizer=fused_sgd):
            t = model(teacher_spec, 0)
            _row("teacher alone, fp16, fused SGD", fit(Alone(t), data, one("fp16"), phase="teacher", seed=0,
                                                       device=device), "ablation: fit uses foreach SGD")


def _ddp_worker(rank: int, world: int, port: int, device_type: str, n: int, epochs: int, out) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world)
    try:
        device = torch.device(f"cuda:{rank}") if device_type == "cuda" else torch.device("cpu")
        if device_type == "cuda":
            torch.cuda.set_device(device)
        data = random_images("fmnist-shaped (random)", n, (1, 28, 28), 10)
        torch.manual_seed(0)
        teacher = build_model("cnn", in_shape=(1, 28, 28), num_classes=10, params={"width": 16, "hidden": 256})
        torch.manual_seed(1)
        student = build_model("mlp", in_shape=(1, 28, 28), num_classes=10, params={"hidden": [32]})
        cfg = OptimConfig(epochs=epochs, lr=1e-3, batch_size=128)
        r = fit(LogitDistiller(student, teacher.eval(), KD), data, cfg, phase="distilled", seed=0, device=device)
        if rank == 0:
            out.put(_epochs(r))
    finally:
        dist.destroy_process_group()


def time_ddp(device, n: int, epochs: int) -> None:
    import socket

    import torch.multiprocessing as mp

    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(2, port, torch.device(device).type, n, epochs, q), nprocs=2,
                       join=True, start_method="spawn")
    first, steady = q.get()
    print(f"| KD, teacher run every step, 2-process DDP ({'NCCL' if 'cuda' in str(device) else 'gloo'}) "
          f"| {steady:.3f} | {first:.3f} | each rank half of every batch |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", help="folder with Fashion-MNIST IDX files; default: random tensors")
    ap.add_argument("--quick", action="store_true", help="small sets, 2 epochs: a smoke test")
    ap.add_argument("--only", choices=("checks", "fmnist", "cifar"), action="append",
                    help="run only these parts (repeatable); default: all")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    parts = set(args.only or ("checks", "fmnist", "cifar"))
    cuda = device.type == "cuda"
    t_start = time.perf_counter()
    gpu = torch.cuda.get_device_name(device) if cuda else "none"
    print(f"torch {torch.__version__}, device {device} ({gpu}), {torch.cuda.device_count()} GPU(s), "
          f"{torch.get_num_threads()} CPU threads, python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    compile_on = cuda and not args.no_compile
    ok = True
    if "checks" in parts:
        print("\n## checks", flush=True)
        ok = run_checks(device, with_compile=compile_on)
    precisions = ("fp32", "bf16", "fp16") if cuda else ("fp32",)
    if "fmnist" in parts:
        data = fashion_mnist(args.data, 2000 if args.quick else 60000)
        time_setup("fmnist", data, ("cnn", {"width": 16, "hidden": 256}), ("mlp", {"hidden": [32]}),
                   OptimConfig(lr=1e-3, batch_size=128), device, precisions, epochs=2 if args.quick else 3,
                   compile_teacher=compile_on, real=not data.source.startswith("random"), extras=True)
        if torch.cuda.device_count() >= 2 or (not cuda and args.quick):
            try:
                time_ddp(device, 2000 if args.quick else 60000, 2 if args.quick else 3)
            except Exception as e:
                print(f"| 2-process DDP | failed | | {type(e).__name__}: {str(e)[:200]} |")
        elif cuda:
            print("| 2-process DDP | not run: one GPU | | |")
    if "cifar" in parts:
        data = random_images("cifar-shaped (random)", 1000 if args.quick else 60000, (3, 32, 32), 10)
        time_setup("cifar", data, ("resnet32", {}), ("resnet8", {}),
                   OptimConfig(lr=0.05, batch_size=128, optimizer="sgd"), device, precisions,
                   epochs=2, compile_teacher=compile_on, real=False, diagnose=True)
    print(f"\nchecks {'passed' if ok else 'FAILED'}; total {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
