"""The runs behind the dashboard's presets, each with the claim it makes.

A preset is one or more RunConfigs and a claim a person can check. ``benchmarks/presets.py``
runs every preset over three seeds and writes the measured effect beside its claim in
``docs/presets.md``; where a claim does not hold there, the preset or the claim changes.
The Presets page turns these configs into Train-page links.

All Fashion-MNIST presets share one teacher (an MLP 784-256-256-10 trained on the whole training
split), so a teacher trained for one preset serves the others.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import DataConfig, LossConfig, ModelConfig, OptimConfig, RunConfig

__all__ = ["RunPreset", "run_presets", "fmnist_run", "FMNIST_TEACHER"]

FMNIST_TEACHER = ModelConfig("mlp", {"hidden": [256, 256]})
FMNIST_TEACHER_OPTIM = OptimConfig(epochs=8, lr=1e-3, batch_size=128)


@dataclass(frozen=True)
class RunPreset:
    key: str
    title: str
    claim: str  # what the preset shows, in words a benchmark can check (docs/presets.md)
    runs: tuple[tuple[str, RunConfig], ...]  # (link label, config)


TRANSFER_RATIO = 31  # 32 labelled + 992 transfer images a step: ~8 passes over the transfer set in 400 steps


def fmnist_run(name: str, *, labelled: int = 300, transfer: bool = False, T: float = 2.0,
               alpha: float = 0.1, hidden: tuple[int, ...] = (32,), epochs: int = 40,
               pseudo: bool = False, ratio: int = TRANSFER_RATIO) -> RunConfig:
    """A Fashion-MNIST preset run: the shared teacher on all 54,000 training images, students
    with ``labelled`` labels (class-balanced), batch 32 (+ ``ratio`` x 32 transfer images), Adam 1e-3."""
    return RunConfig(
        data=DataConfig(name="fashion_mnist", labelled=labelled, balanced=labelled > 0, transfer_set=transfer,
                        transfer_ratio=ratio),
        teacher=FMNIST_TEACHER, teacher_optim=FMNIST_TEACHER_OPTIM,
        student=ModelConfig("mlp", {"hidden": list(hidden)}),
        loss=LossConfig(temperature=T, alpha=alpha),
        optim=OptimConfig(epochs=epochs, lr=1e-3, batch_size=32), pseudo_arm=pseudo, name=name)


def run_presets() -> list[RunPreset]:
    """Every Train-page preset, in the order the Presets page shows them."""
    return [
        RunPreset(
            "few_labels", "Few labels: a teacher makes 300 labels go further",
            "With 300 labels and the other 53,700 training images as a transfer set, the distilled "
            "student beats the same student trained on the 300 labels alone; the 95 % interval of "
            "the gain excludes 0 on each of 3 seeds. (The third student, trained on the teacher's "
            "hard labels over the same transfer set, did as well or better here: with this many "
            "unlabelled images the teacher's answer carries most of what it knows.)",
            (("Train the few-labels preset (seconds on 2 idle cores)",
              fmnist_run("preset: few labels", transfer=True, pseudo=True)),)),
        RunPreset(
            "t1_t10", "T = 1 vs T = 10",
            "With 1,000 labels (no transfer set) and α = 0.3, T = 1 beats the baseline (the 95 % "
            "interval of the gain over 3 seeds excludes 0) while T = 10 makes no clear difference: "
            "for a 32-unit student the softer targets are not the better ones (see the tiny-student "
            "preset).",
            (("Train with T = 1", fmnist_run("preset: T = 1", labelled=1000, T=1.0, alpha=0.3)),
             ("Train with T = 10", fmnist_run("preset: T = 10", labelled=1000, T=10.0, alpha=0.3)))),
        RunPreset(
            "a0_a1", "α = 0 vs α = 1",
            "α = 1 is the baseline bit for bit (gain exactly 0 on every seed); α = 0 learns from the "
            "teacher's soft targets alone and still beats the baseline trained on the 1,000 labels.",
            (("Train with α = 0 (teacher only)", fmnist_run("preset: α = 0", labelled=1000, T=4.0, alpha=0.0)),
             ("Train with α = 1 (labels only)", fmnist_run("preset: α = 1", labelled=1000, T=4.0, alpha=1.0)))),
        RunPreset(
            "tiny_student", "A tiny student prefers a low T",
            "For a 30-30 student with 1,000 labels, T = 3 gives a larger gain than T = 16 "
            "(Hinton et al.: 2.5–4 suits 30 units per layer).",
            (("Train the 30-30 student at T = 3",
              fmnist_run("preset: tiny student, T = 3", labelled=1000, T=3.0, hidden=(30, 30))),
             ("… and at T = 16",
              fmnist_run("preset: tiny student, T = 16", labelled=1000, T=16.0, hidden=(30, 30))))),
    ]
