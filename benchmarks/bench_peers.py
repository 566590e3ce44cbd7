"""Distillation speed: kdcore beside a bare PyTorch loop, the tutorials' DataLoader loop, torchdistill
and KD_Lib, with the same teacher weights, student init, data, batch, optimiser, T and alpha.

    python benchmarks/bench_peers.py --quick              # kdcore and the bare loops (app venv)
    /tmp/peers-venv/bin/python benchmarks/bench_peers.py  # + DataLoader loop, torchdistill, KD_Lib
    python benchmarks/bench_peers.py --scaling            # kdcore vs bare: 6k/18k/54k samples, widths

The peers are not in the app's requirements: benchmarks/requirements-peers.txt says how to make the
separate venv (it sees the app's torch through a .pth file, so every row runs the same torch).

Setting: Fashion-MNIST (54k train / 6k val / 10k test, kdcore's split), CNN teacher (~417k
parameters, trained one epoch by kdcore, then frozen and shared), MLP 784-32-10 student from the same
initial weights in every row of a round, batch 128, Adam lr 1e-3, T = 4, alpha = 0.5 on the hard
label, 1 torch thread (so no row gains from threads another does not use; num_workers = 0).
An epoch is one pass over the training set plus one accuracy pass over the validation set, as
kdcore's fit() times it. Rows run interleaved (round 1: every row, round 2: every row, ...), so a
busy machine slows all alike; the table gives medians over rounds x epochs of process CPU time
and wall time, and the test accuracy after the last epoch (mean over rounds).

Last line: kd_vs_bare_kd=<cached KD / bare cached KD> alone_vs_bare=<alone / bare alone>
fastest_peer_vs_kd=<fastest peer / kdcore cached KD>, all on median CPU seconds per epoch.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdcore import DataConfig, LossConfig, ModelConfig, OptimConfig, replace
from kdcore.data import load_data
from kdcore.events import EpochEnd, PhaseStart
from kdcore.models import build_model
from kdcore.train.trainer import Alone, LogitDistiller, fit, predict_logits

T, ALPHA, LR, BATCH = 4.0, 0.5, 1e-3, 128
TEACHER = ModelConfig("cnn", {"width": 16, "hidden": 256})
LOSS = LossConfig(name="kd", temperature=T, alpha=ALPHA)

# What each row computes (alpha side, T^2, KL direction): the doc table copies these.
WHAT = {
    "kdcore, cached teacher logits": "a*CE + (1-a)*T^2*KL(t‖s), batch mean; teacher logits computed once",
    "bare loop, cached teacher logits": "same maths, tensor-indexed batches, written in this script",
    "kdcore, teacher run every step": "same maths; teacher forward under no_grad each step",
    "bare loop, teacher run every step": "same maths; teacher forward under no_grad each step",
    "kdcore, student alone": "CE only (the baseline)",
    "bare loop, student alone": "CE only",
    "DataLoader loop (PyTorch KD tutorial)": "a*CE + (1-a)*T^2*sum p_t(log p_t - log p_s)/B = same KL(t‖s); "
                                             "torchvision dataset + ToTensor/Normalize per sample",
    "torchdistill 1.1.5 (KDLoss)": "alpha*CE + (1-alpha)*T^2*KLDivLoss(batchmean) = same; teacher frozen, "
                                   "forward hooks + io dicts each step",
    "KD_Lib 0.0.32 (VanillaKD)": "(1-w)*CE + w*T^2*loss_fn(p_t, p_s), w = 1-a; loss_fn given here as "
                                 "KL(t‖s) (its default is MSE on probabilities); teacher not under no_grad, "
                                 "so backward runs through it too",
}
PEERS = ("DataLoader loop (PyTorch KD tutorial)", "torchdistill 1.1.5 (KDLoss)", "KD_Lib 0.0.32 (VanillaKD)")


def clocks() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (predict_logits(model, x).argmax(1) == y).float().mean().item()


def kd_terms(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The bare loop's loss, written out: alpha * CE + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))."""
    kl = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean", log_target=True)
    return ALPHA * F.cross_entropy(s, y) + (1 - ALPHA) * T * T * kl


# --- the rows -------------------------------------------------------------------------------

def run_kdcore(student, teacher, data, epochs, *, cache=None, alone=False):
    """kdcore's fit(); per-epoch CPU and wall time read at PhaseStart / EpochEnd events."""
    marks: list[tuple[float, float]] = []

    def on_event(ev):
        if isinstance(ev, (PhaseStart, EpochEnd)):
            marks.append(clocks())

    distiller = Alone(student) if alone else LogitDistiller(student, teacher, LOSS)
    fit(distiller, data, OptimConfig(epochs=epochs, lr=LR, batch_size=BATCH), phase="bench", seed=0,
        teacher_logits=cache, callbacks=[on_event])
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]


def run_bare(student, teacher, data, epochs, *, cache=None, alone=False):
    """The reference: what a person writes by hand over in-memory tensors, same batches as kdcore."""
    opt = torch.optim.Adam(student.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(0)
    x_all, y_all, n = data.x_train, data.y_train, len(data.x_train)
    out = []
    for _ in range(epochs):
        c0, w0 = clocks()
        student.train()
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, BATCH):
            idx = order[start:start + BATCH]
            x, y = x_all[idx], y_all[idx]
            s = student(x)
            if alone:
                loss = F.cross_entropy(s, y)
            elif cache is not None:
                loss = kd_terms(s, cache[idx], y)
            else:
                with torch.no_grad():
                    t = teacher(x)
                loss = kd_terms(s, t, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        accuracy(student, data.x_val, data.y_val)
        c1, w1 = clocks()
        out.append((c1 - c0, w1 - w0))
    return out


def loader_accuracy(model, loader) -> float:
    model.eval()
    right = seen = 0
    with torch.no_grad():
        for x, y in loader:
            right += (model(x).argmax(1) == y).sum().item()
            seen += len(y)
    return right / seen


def run_tutorial(student, teacher, loaders, epochs):
    """The loop of PyTorch's knowledge-distillation tutorial: DataLoader over a torchvision dataset."""
    train_loader, val_loader = loaders
    opt = torch.optim.Adam(student.parameters(), lr=LR)
    ce = nn.CrossEntropyLoss()
    teacher.eval()
    out = []
    for _ in range(epochs):
        c0, w0 = clocks()
        student.train()
        for x, y in train_loader:
            opt.zero_grad()
            with torch.no_grad():
                t = teacher(x)
            s = student(x)
            soft_targets = F.softmax(t / T, dim=-1)
            soft_prob = F.log_softmax(s / T, dim=-1)
            soft_loss = torch.sum(soft_targets * (soft_targets.log() - soft_prob)) / soft_prob.size(0) * T ** 2
            loss = (1 - ALPHA) * soft_loss + ALPHA * ce(s, y)
            loss.backward()
            opt.step()
        loader_accuracy(student, val_loader)
        c1, w1 = clocks()
        out.append((c1 - c0, w1 - w0))
    return out


def run_torchdistill(student, teacher, datasets, epochs):
    """torchdistill's DistillationBox with its KDLoss, driven as its image-classification example does."""
    from torch.utils.data import RandomSampler
    from torchdistill.core.distillation import get_distillation_box

    kd = {"key": "KDLoss", "kwargs": {"student_module_path": ".", "student_module_io": "output",
                                      "teacher_module_path": ".", "teacher_module_io": "output",
                                      "temperature": T, "alpha": ALPHA, "reduction": "batchmean"}}
    train_config = {
        "num_epochs": epochs,
        "train_data_loader": {"dataset_id": "train", "sampler": {"class_or_func": RandomSampler, "kwargs": {}},
                              "kwargs": {"batch_size": BATCH, "num_workers": 0}},
        "val_data_loader": {"dataset_id": "val", "sampler": {"class_or_func": torch.utils.data.SequentialSampler,
                                                             "kwargs": {}},
                            "kwargs": {"batch_size": 1024, "num_workers": 0}},
        "teacher": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": True},
        "optimizer": {"key": "Adam", "kwargs": {"lr": LR}},
        "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {"criterion": kd, "weight": 1.0}}}},
    }
    teacher.eval()
    box = get_distillation_box(teacher, student, datasets, train_config, torch.device("cpu"), None, False, 1.0)
    out = []
    for epoch in range(epochs):
        c0, w0 = clocks()
        box.pre_epoch_process(epoch=epoch)
        for sample_batch, targets, supp_dict in box.train_data_loader:
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss=loss)
        box.post_epoch_process()
        loader_accuracy(student, box.val_data_loader)
        c1, w1 = clocks()
        out.append((c1 - c0, w1 - w0))
    return out


@functools.lru_cache(maxsize=1)
def import_kd_lib_vanilla():
    """KD_Lib's VanillaKD without its package __init__, which imports its text models (transformers)."""
    import importlib.util

    spec = importlib.util.find_spec("KD_Lib")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("KD_Lib is not installed")
    root = Path(list(spec.submodule_search_locations)[0])
    for name, path in (("KD_Lib", root), ("KD_Lib.KD", root / "KD"), ("KD_Lib.KD.vision", root / "KD" / "vision")):
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.__path__ = [str(path)]
            sys.modules[name] = mod
    from KD_Lib.KD.vision.vanilla.vanilla_kd import VanillaKD

    return VanillaKD


class KLOnProbs(nn.Module):
    """KD_Lib calls loss_fn(softmax(t/T), softmax(s/T)); this makes it KL(t || s), batch mean."""

    def forward(self, p_teacher, p_student):
        return F.kl_div(p_student.log(), p_teacher, reduction="batchmean")


def run_kd_lib(student, teacher, loaders, epochs):
    VanillaKD = import_kd_lib_vanilla()
    train_loader, val_loader = loaders
    # as KD_Lib's own workflow leaves it (train_teacher, then train_student): the teacher's weights
    # still require grad and its forward is not under no_grad, so backward also runs through it
    teacher = copy.deepcopy(teacher).requires_grad_(True)
    opt = torch.optim.Adam(student.parameters(), lr=LR)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        kd = VanillaKD(teacher, student, train_loader, val_loader, None, opt, loss_fn=KLOnProbs(), temp=T,
                       distil_weight=1 - ALPHA, device="cpu", log=False)
        for _ in range(epochs):  # one call per epoch to time each; it keeps the optimiser and weights
            c0, w0 = clocks()
            with contextlib.redirect_stdout(io.StringIO()):
                kd.train_student(epochs=1, plot_losses=False, save_model=False,
                                 save_model_pth=os.path.join(tmp, "student.pt"))
            c1, w1 = clocks()
            out.append((c1 - c0, w1 - w0))
    return out


# --- set-up ---------------------------------------------------------------------------------

def teacher_model(data, cache_path: Path) -> tuple[nn.Module, str]:
    """The shared teacher: trained one epoch by kdcore once, then reloaded (weights_only)."""
    teacher = build_model(TEACHER.name, in_shape=data.in_shape, num_classes=10, params=TEACHER.params)
    if cache_path.is_file():
        teacher.load_state_dict(torch.load(cache_path, weights_only=True))
        how = f"loaded from {cache_path}"
    else:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        fit(Alone(teacher), data, OptimConfig(epochs=1, lr=LR, batch_size=BATCH), phase="teacher", seed=0)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(teacher.state_dict(), cache_path)
        how = f"trained 1 epoch by kdcore in {time.perf_counter() - t0:.0f}s, saved to {cache_path}"
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, how


def torchvision_sets(data, data_cfg):
    """The tutorials' dataset: torchvision FashionMNIST with ToTensor + Normalize, on kdcore's split."""
    import torchvision.datasets as tvd
    import torchvision.transforms as tvt
    from torch.utils.data import DataLoader, Subset

    from kdcore import DATASETS
    from kdcore.data import _split_pool

    found = DATASETS.get("fashion_mnist")._find(data_cfg)  # the folder load_data() read and unpacked
    tf = tvt.Compose([tvt.ToTensor(), tvt.Normalize(data.mean, data.std)])
    full = tvd.FashionMNIST(str(found.root), train=True, transform=tf)
    tr, va = _split_pool(len(full), data_cfg)
    train, val = Subset(full, tr.tolist()), Subset(full, va.tolist())
    if not torch.equal(full.targets[tr], data.y_train) or not torch.equal(full.targets[va], data.y_val):
        raise RuntimeError("the torchvision split differs from kdcore's: the comparison would not be fair")
    loaders = (DataLoader(train, batch_size=BATCH, shuffle=True, num_workers=0),
               DataLoader(val, batch_size=1024, num_workers=0))
    return {"train": train, "val": val}, loaders


def median(xs) -> float:
    return statistics.median(xs) if xs else float("nan")


def time_rows(rows, make_student, data, rounds, epochs) -> dict[str, dict]:
    """Run every row once per round, interleaved; collect per-epoch (cpu, wall) and test accuracy."""
    res = {name: {"cpu": [], "wall": [], "acc": [], "error": None} for name in rows}
    for r in range(rounds):
        init = make_student(r)
        for name, fn in rows.items():
            if res[name]["error"]:
                continue
            student = copy.deepcopy(init)
            try:
                per_epoch = fn(student)
            except Exception as e:  # a peer that cannot run here is reported, not faked
                res[name]["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                print(f"  {name}: FAILED ({res[name]['error']})", flush=True)
                continue
            res[name]["cpu"] += [c for c, _ in per_epoch]
            res[name]["wall"] += [w for _, w in per_epoch]
            res[name]["acc"].append(accuracy(student, data.x_test, data.y_test))
            print(f"  round {r + 1} {name}: {median([c for c, _ in per_epoch]):.2f} CPU-s/epoch, "
                  f"test acc {res[name]['acc'][-1]:.4f}", flush=True)
    return res


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def peers_table(args) -> None:
    data_cfg = DataConfig(name="fashion_mnist")
    t0 = time.perf_counter()
    data = load_data(data_cfg)
    print(f"Fashion-MNIST loaded in {time.perf_counter() - t0:.1f}s: train {len(data.x_train)}, val "
          f"{len(data.x_val)}, test {len(data.x_test)}; torch {torch.__version__}, {torch.get_num_threads()} thread")
    teacher, how = teacher_model(data, Path(args.teacher_cache))
    c0, w0 = clocks()
    cache = predict_logits(teacher, data.x_train)
    c1, w1 = clocks()
    cache_cpu = c1 - c0
    print(f"teacher: {how}; test acc {accuracy(teacher, data.x_test, data.y_test):.4f}; "
          f"logit cache computed once in {cache_cpu:.2f} CPU-s ({w1 - w0:.2f} s wall)")

    def make_student(r):
        torch.manual_seed(1000 + r)
        return build_model("mlp", in_shape=data.in_shape, num_classes=10, params={"hidden": [32]})

    E = args.epochs
    rows = {
        "kdcore, cached teacher logits": lambda s: run_kdcore(s, teacher, data, E, cache=cache),
        "bare loop, cached teacher logits": lambda s: run_bare(s, teacher, data, E, cache=cache),
        "kdcore, student alone": lambda s: run_kdcore(s, teacher, data, E, alone=True),
        "bare loop, student alone": lambda s: run_bare(s, teacher, data, E, alone=True),
        "kdcore, teacher run every step": lambda s: run_kdcore(s, teacher, data, E),
        "bare loop, teacher run every step": lambda s: run_bare(s, teacher, data, E),
    }
    if not args.quick:
        logging.disable(logging.INFO)  # torchdistill logs its whole config at INFO
        datasets, loaders = torchvision_sets(data, data_cfg)
        rows[PEERS[0]] = lambda s: run_tutorial(s, teacher, loaders, E)
        rows[PEERS[1]] = lambda s: run_torchdistill(s, teacher, datasets, E)
        rows[PEERS[2]] = lambda s: run_kd_lib(s, teacher, loaders, E)
    load0 = load()
    res = time_rows(rows, make_student, data, args.rounds, E)
    load1 = load()
    kd = median(res["kdcore, cached teacher logits"]["cpu"])
    print(f"\n{args.rounds} interleaved rounds x {E} epochs; load average before {load0}, after {load1}\n")
    print("| implementation | what it computes | CPU s/epoch | wall s/epoch | CPU x kdcore cached | test acc |")
    print("|---|---|---|---|---|---|")
    for name, r in res.items():
        if r["error"]:
            print(f"| {name} | {WHAT[name]} | failed: {r['error']} | | | |")
            continue
        c, w = median(r["cpu"]), median(r["wall"])
        print(f"| {name} | {WHAT[name]} | {c:.2f} | {w:.2f} | {c / kd:.2f} | "
              f"{100 * statistics.mean(r['acc']):.2f} % |")
    ok_peers = [p for p in PEERS if p in res and not res[p]["error"]]
    fastest = min(ok_peers, key=lambda p: median(res[p]["cpu"])) if ok_peers else None
    if fastest:
        gap = 100 * (statistics.mean(res[fastest]["acc"]) - statistics.mean(res["kdcore, cached teacher logits"]["acc"]))
        print(f"\nfastest peer: {fastest}, {median(res[fastest]['cpu']) / kd:.1f}x kdcore's CPU time per epoch "
              f"(cached logits), {median(res[fastest]['cpu']) / median(res['kdcore, teacher run every step']['cpu']):.1f}x"
              f" kdcore with the teacher run every step; test accuracy gap {gap:+.2f} points")
        # the cache is paid once per run, not per epoch: what a whole run costs
        for n_ep in (E, 20):
            ours = cache_cpu + n_ep * kd
            theirs = n_ep * median(res[fastest]["cpu"])
            kind = "measured epochs" if n_ep == E else "computed from the medians"
            print(f"whole run of {n_ep} epochs ({kind}): kdcore {ours:.1f} CPU-s including the logit cache, "
                  f"{fastest} {theirs:.1f} CPU-s ({theirs / ours:.1f}x)")
    ratio = lambda a, b: median(res[a]["cpu"]) / median(res[b]["cpu"])  # noqa: E731
    print(f"kd_vs_bare_kd={ratio('kdcore, cached teacher logits', 'bare loop, cached teacher logits'):.3f} "
          f"alone_vs_bare={ratio('kdcore, student alone', 'bare loop, student alone'):.3f} "
          f"fastest_peer_vs_kd={median(res[fastest]['cpu']) / kd if fastest else float('nan'):.1f}")


def scaling_table(args) -> None:
    """kdcore against the bare loops as the training set and the student grow (CPU s/epoch, medians)."""
    base = DataConfig(name="fashion_mnist")
    full = load_data(base)
    teacher, how = teacher_model(full, Path(args.teacher_cache))
    print(f"teacher: {how}; {args.rounds} interleaved rounds x 1 epoch; load before {load()}")
    settings = [(n, ("mlp", {"hidden": [32]})) for n in (6000, 18000, 0)]
    settings += [(0, ("mlp", {"hidden": [w]})) for w in (128, 512, 1024)] + [(0, ("lenet5", {}))]
    print("\n| samples | student | kdcore cached KD | bare cached KD | ratio | kdcore alone | bare alone | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for n, (sname, sparams) in settings:
        data = load_data(replace(base, train_subset=n)) if n else full
        cache = predict_logits(teacher, data.x_train)

        def make_student(r, sname=sname, sparams=sparams, data=data):
            torch.manual_seed(1000 + r)
            return build_model(sname, in_shape=data.in_shape, num_classes=10, params=sparams)

        rows = {
            "kd": lambda s, d=data, c=cache: run_kdcore(s, teacher, d, 1, cache=c),
            "bare_kd": lambda s, d=data, c=cache: run_bare(s, teacher, d, 1, cache=c),
            "alone": lambda s, d=data: run_kdcore(s, teacher, d, 1, alone=True),
            "bare_alone": lambda s, d=data: run_bare(s, teacher, d, 1, alone=True),
        }
        with contextlib.redirect_stdout(io.StringIO()):
            res = time_rows(rows, make_student, data, args.rounds, 1)
        m = {k: median(v["cpu"]) for k, v in res.items()}
        label = f"{sname} {sparams.get('hidden', '')}".strip()
        print(f"| {len(data.x_train)} | {label} | {m['kd']:.3f} | {m['bare_kd']:.3f} | {m['kd'] / m['bare_kd']:.2f} | "
              f"{m['alone']:.3f} | {m['bare_alone']:.3f} | {m['alone'] / m['bare_alone']:.2f} |", flush=True)
    print(f"\nload average after: {load()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="kdcore and the bare loops only (no peers needed)")
    ap.add_argument("--scaling", action="store_true", help="kdcore vs bare over samples and student widths")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per row and round (default 2)")
    ap.add_argument("--teacher-cache", default=str(Path.home() / ".cache" / "kdcore" / "bench_peers_teacher.pt"),
                    help="the shared teacher's weights: trained once, then reloaded")
    args = ap.parse_args()
    if args.rounds < 1 or args.epochs < 1:
        ap.error("--rounds and --epochs must be >= 1")
    torch.set_num_threads(1)  # the same for every row: no implementation gains from threads
    torch.set_num_interop_threads(1)
    if args.scaling:
        scaling_table(args)
    else:
        peers_table(args)


if __name__ == "__main__":
    main()
