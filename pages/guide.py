"""Guide: what knowledge distillation is, the formulas, and how to read each chart."""
from __future__ import annotations

import streamlit as st

from kdapp import shared as sh

GUIDE = r"""
## What knowledge distillation is

A big network (the **teacher**) is accurate but slow and heavy. A small network (the
**student**) is fast but, trained on its own, less accurate. Knowledge distillation trains
the student to copy the teacher's *whole output distribution*, not only the right answer.
Those outputs carry more information than a label: a teacher that says "this shirt is 70 %
shirt, 20 % T-shirt, 8 % pullover" tells the student which classes look alike. Hinton, Vinyals
and Dean (2015) called this *dark knowledge*.

## The loss, term by term

The distilled student minimises

$$
\mathcal{L} = \alpha\,\mathrm{CE}\big(y,\ \sigma(z_s)\big)
  + (1-\alpha)\,T^2\,\mathrm{KL}\big(\sigma(z_t/T)\ \|\ \sigma(z_s/T)\big)
$$

- $z_s$ and $z_t$ are the student's and the teacher's logits, $\sigma$ is the softmax, $y$ the label.
- **α weighs the hard-label cross-entropy.** The soft (teacher) term gets $1-\alpha$.
  α = 1 is the student trained alone — the baseline. α = 0 learns from the teacher only.
- **T, the temperature**, divides the logits before the softmax. T = 1 is the ordinary softmax;
  a larger T flattens both distributions, so the small probabilities of the wrong classes —
  the dark knowledge — become big enough to learn from.
- **T²** keeps the soft term's gradients the same size whatever T is (its gradients shrink as
  1/T² otherwise). Untick "× T²" on the Train page to see what happens without it.

Other losses on the Train page: **soft_ce** uses the cross-entropy to the soft targets
instead of the KL (it differs by the teacher's entropy, a constant, so the gradients are the
same); **mse_logits** matches the logits directly (Ba & Caruana 2014), which is what KD tends
to as T grows, so T is not used. The other methods in the Method box (DKD, FitNets,
attention transfer and more) are described under the box when you pick one, and their own
knobs appear next to it; they keep the same convention for α.

## What a run does

1. Trains the teacher (or loads it from an earlier run, or from an uploaded `.pt` file).
2. Trains the student **alone** on the labels: the **baseline**.
3. Trains the **same** student again — same initial weights, same data order, same schedule —
   with the distillation loss: the **distilled** student.
4. Tests all three on the held-out test set.

Because only the loss differs between steps 2 and 3, the difference in test accuracy is the
effect of distillation — for this seed. One seed can mislead: differences of a point or two
are often noise. Run `python -m kdcore compare` to repeat a run over several seeds and see
the spread.

## How to read the charts

**Total training loss** (Train page). One line per phase, measured on each training batch,
plotted against epochs so the phases line up. The distilled student's loss is not on the same
scale as the others: it includes the soft term.

While a run trains, the charts redraw every two seconds and the progress line, with its
phase and an estimate of the time left, every second. Each redraw resets a zoomed chart, so
tick **Freeze charts** to hold them still and zoom in; untick it to catch up.

**Loss terms** (Train page). The distilled student's loss split into its two weighted
parts, which add up to the total: α·CE (how well it fits the labels) and (1 − α)·T²·KL (how
far it is from the teacher). A soft term that stays high means the student cannot copy the
teacher — it may be too small, or T too high.

**Accuracy** (Train page). Solid lines are validation accuracy after each epoch, dashed
lines training accuracy, blue for the baseline, red for the distilled student, grey for the
teacher. Training far above validation means overfitting. Distillation often narrows that
gap: soft targets are a regulariser.

**Comparison table** (end of a run). Test-set numbers for the three models:
accuracy; macro F1 (the mean of the per-class F1 scores, fair when classes differ in size);
ECE, the expected calibration error (how far the model's confidence is from its accuracy;
0 is perfect); agreement with the teacher (how often the top prediction is the teacher's);
parameters, size on disk, and the time of one forward pass over a batch. The verdict under
it says whether distillation helped and by how many points.

**Soft targets** page. For a few test samples, bar charts of the teacher's and the
student's probabilities at several temperatures side by side, with each distribution's
entropy H in nats (0 = certain; log K = uniform over K classes). Watch the bars flatten as T
grows. The heatmap averages the teacher's soft targets over all test samples of each true
class: bright cells off the diagonal are the pairs of classes the teacher confuses, which is
what the student learns from the soft term.

**Runs** page. Every run ever started here, from the history on disk. Pick several to
overlay their validation-accuracy curves (solid: distilled, dashed: baseline) and compare
their final numbers. Export the metrics and configs as CSV or JSON, delete runs, or copy the
command that replays one headless.

## Tips

- Start with the 2-D sets: a run takes seconds, and the effect of T and α shows quickly.
- Make the student clearly smaller than the teacher, or there is nothing to distil.
- Distillation helps most when the student is data-starved: try a training subset.
- A link to the Train page carries its settings in the URL: share it to share a setup.
"""


def main() -> None:
    sh.open_page("guide")
    st.title("Guide")
    st.markdown(GUIDE)


main()
