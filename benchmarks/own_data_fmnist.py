"""The worked example of docs/own_data.md: Fashion-MNIST as a folder of PNGs, distilled and shipped.

    python benchmarks/fmnist_to_folder.py --out /tmp/fmnist_png     # once: 70,000 PNG files
    python benchmarks/own_data_fmnist.py --folder /tmp/fmnist_png

Measures, and prints as markdown:
  1. loading the folder as ``image_folder`` (decode + resize + normalise 70,000 PNGs, in memory);
  2. one run (CNN teacher 3 epochs, MLP 784-32-10 student 5 epochs, T = 4, alpha = 0.5, seed 0)
     on the folder and the same run on the built-in ``fashion_mnist`` (the IDX files): test
     accuracy of teacher, baseline and distilled student;
  3. one student epoch with the images held in memory against the same epoch streamed from disk
     (``data.memory_mb = 0``), interleaved, median of ``--repeats``;
  4. ``export``: ONNX of the distilled student checked with onnxruntime on the 10,000 test images
     (agreement, max logit difference, CPU latency of a batch of 128 in both runtimes), float32 and
     int8; and the .safetensors file rebuilt into the same model;
  5. ``runs export --tensorboard``: the event files of the run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import kdcore
from kdcore import RunStore, from_dict, run_experiment
from kdcore.data import load_data


def config(data: dict, subset: int = 0) -> dict:
    return {"data": {**data, "train_subset": subset}, "teacher": {"name": "cnn", "params": {}},
            "student": {"name": "mlp", "params": {"hidden": [32]}},
            "loss": {"name": "kd", "temperature": 4.0, "alpha": 0.5},
            "optim": {"epochs": 5, "lr": 1e-3, "batch_size": 128},
            "teacher_optim": {"epochs": 3, "lr": 1e-3, "batch_size": 128}, "seed": 0}


def student_epoch(data) -> float:
    from kdcore.config import OptimConfig
    from kdcore.models import build_model
    from kdcore.train.trainer import Alone, fit

    torch.manual_seed(0)
    m = build_model("mlp", in_shape=tuple(data.in_shape), num_classes=len(data.classes), params={"hidden": [32]})
    r = fit(Alone(m), data, OptimConfig(epochs=1, lr=1e-3, batch_size=128), phase="bench", seed=0)
    return r.epochs[0]["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", default="/tmp/fmnist_png", help="output of benchmarks/fmnist_to_folder.py")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the epoch timing")
    ap.add_argument("--subset", type=int, default=0, help="data.train_subset for the runs (0 = all 54,000)")
    ap.add_argument("--reuse", metavar="RUNS_DIR:RUN_ID", help="skip section 2: export run RUN_ID of the "
                    "history RUNS_DIR (a folder run made by an earlier call of this script)")
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    folder = {"name": "image_folder", "path": args.folder, "image_size": 28}

    t0 = time.perf_counter()
    mem = load_data(from_dict(config(folder)).data)
    t_load = time.perf_counter() - t0
    print(f"\n## 1. Loading\n\n{mem.source}: {len(mem.y_train)} train / {len(mem.y_val)} val / "
          f"{len(mem.y_test)} test, shape {mem.in_shape}, loaded in **{t_load:.1f} s**")

    store = RunStore(args.reuse.rsplit(":", 1)[0] if args.reuse else tempfile.mkdtemp(prefix="kd_owndata_"))
    print(f"run history: {store.root}")
    rows = {}
    compared = (("image folder (PNG)", folder), ("built-in fashion_mnist (IDX)", {"name": "fashion_mnist"}))
    for label, data in () if args.reuse else compared:
        t0 = time.perf_counter()
        cfg = from_dict(config(data, args.subset))
        res = run_experiment(cfg, store=store, data=mem if data is folder and not args.subset else None)
        assert res.status == "completed", res.message
        rows[label] = (res, time.perf_counter() - t0)
    if rows:
        print("\n## 2. One run, CNN teacher -> MLP 784-32-10 student (T = 4, alpha = 0.5, seed 0)\n")
        print("| data | teacher | baseline | distilled | gain (points) | wall time |\n|---|---|---|---|---|---|")
    for label, (res, secs) in rows.items():
        m = res.metrics
        print(f"| {label} | {m['teacher']['accuracy']:.2%} | {m['baseline']['accuracy']:.2%} | "
              f"{m['distilled']['accuracy']:.2%} | {res.gain * 100:+.2f} | {secs:.0f} s |")

    streamed = load_data(from_dict(config({**folder, "memory_mb": 0})).data)
    t_mem, t_str = [], []
    for _ in range(args.repeats):
        t_mem.append(student_epoch(mem))
        t_str.append(student_epoch(streamed))
    a, b = statistics.median(t_mem), statistics.median(t_str)
    print(f"\n## 3. In memory vs streamed\n\nstudent epoch over {len(mem.y_train)} images, median of "
          f"{args.repeats} interleaved: in memory **{a:.2f} s**, streamed from disk **{b:.2f} s** "
          f"(**{b / a:.1f}x**; decoding {len(mem.y_train) / max(b - a, 1e-9):,.0f} images/s on "
          f"{kdcore.data.own._workers()} worker threads)")

    from kdcore.ship.compress import load_run_model
    from kdcore.history.weights import load_model_file
    from kdcore.ship.export import export_run

    rid = int(args.reuse.rsplit(":", 1)[1]) if args.reuse else rows["image folder (PNG)"][0].run_id
    print("\n## 4. Export of the distilled student (run on the folder)\n")
    print("| variant | agreement with PyTorch | max logit diff | accuracy (onnx) | onnxruntime | PyTorch | file |")
    print("|---|---|---|---|---|---|---|")
    for variant, formats in (("float32", ("onnx", "safetensors")), ("int8", ("onnx",))):
        res = export_run(store, rid, "distilled", variant, formats=formats)
        v = res.verification
        onnx_kib = next(len(b) for n, b in res.files.items() if n.endswith(".onnx")) / 1024
        print(f"| {variant} | {v['agreement']:.2%} of {v['n']} | {v['max_abs_logit_diff']:.2g} | "
              f"{v['onnx_accuracy']:.2%} | {v['onnx_latency_ms']:.3f} ms | {v['torch_latency_ms']:.3f} ms | "
              f"{onnx_kib:.0f} KiB |")
        if "safetensors" in formats:
            path = Path(store.root) / "student.safetensors"
            path.write_bytes(res.files[f"run{rid}_distilled_float32.safetensors"])
            rebuilt, _ = load_model_file(path)
            stored, _, _ = load_run_model(store, rid, "distilled")
            with torch.no_grad():
                same = torch.equal(rebuilt(mem.x_test), stored(mem.x_test))
    print(f"\n(latency: one batch of {v['latency_batch']}, {v['threads']} threads, median of 20; the "
          f".safetensors file rebuilt with load_model_file gives {'the same' if same else 'DIFFERENT'} "
          f"logits as the stored model on all {len(mem.y_test)} test images)")

    from kdcore.ship.tensorboard import export_tensorboard

    t0 = time.perf_counter()
    out = Path(store.root) / "tb"
    written = export_tensorboard(store, out, [rid])
    print(f"\n## 5. TensorBoard\n\n{len(written)} phase folders written in {time.perf_counter() - t0:.1f} s: "
          + ", ".join(str(p.relative_to(out)) for p in written))


if __name__ == "__main__":
    main()
