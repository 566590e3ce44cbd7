"""Where kdcore's per-step cost over a bare loop goes, for the tiny 784-32-10 student (issue 13).

    python benchmarks/bench_step_overhead.py

One epoch of cached-logit KD over Fashion-MNIST's 54k training samples (random logits stand in for
the teacher's; only their cost matters), 1 torch thread, training steps only (no validation), 5
interleaved rounds, median process CPU seconds. Rows: the bare loop; + kdcore's per-step
bookkeeping (three .item(), the train-accuracy count, a StepEnd event); kdcore's loss
(``losses.hinton_kd``: alpha*CE and (1-alpha)*T^2*KL kept as separate charted terms); the same
terms with (1-alpha)*T^2 folded into one multiply; kdcore's loss + bookkeeping.
"""
import statistics
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
from kdcore import DataConfig  # noqa: E402
from kdcore.data import load_data
from kdcore.models import build_model
from kdcore.losses import hinton_kd
from kdcore.events import StepEnd
data = load_data(DataConfig(name="fashion_mnist"))
torch.manual_seed(0)
cache = torch.randn(len(data.x_train), 10)
T, A = 4.0, 0.5
def kd_bare(s, t, y):
    kl = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean", log_target=True)
    return A * F.cross_entropy(s, y) + (1 - A) * T * T * kl
def run(variant):
    torch.manual_seed(1)
    st = build_model("mlp", in_shape=data.in_shape, num_classes=10, params={"hidden": [32]})
    opt = torch.optim.Adam(st.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    n = len(data.x_train); order = torch.randperm(n, generator=g)
    correct = 0; sums = {}
    c0 = time.process_time()
    for start in range(0, n, 128):
        idx = order[start:start+128]
        x, y, t = data.x_train[idx], data.y_train[idx], cache[idx]
        s = st(x)
        if variant == "folded":
            kl = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean", log_target=True)
            terms = {"ce": A * F.cross_entropy(s, y), "kd": ((1 - A) * T * T) * kl}
            parts = list(terms.values()); loss = sum(parts[1:], parts[0])
        elif variant in ("kdloss", "all"):
            terms = hinton_kd(s, t, y, T=T, alpha=A)
            parts = list(terms.values()); loss = sum(parts[1:], parts[0])
        else:
            loss = kd_bare(s, t, y); terms = {"ce": loss, "kd": loss}
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        if variant in ("books", "all"):
            lf = loss.item(); tf = {k: v.item() for k, v in terms.items()}
            hit = s.argmax(1) == y; correct += hit.sum()
            for k, v in tf.items(): sums[k] = sums.get(k, 0.0) + v
            StepEnd("p", 1, 1, 1, lf, tf, opt.param_groups[0]["lr"], None)
    return time.process_time() - c0
res = {v: [] for v in ("bare", "books", "kdloss", "folded", "all")}
for r in range(5):
    for v in res: res[v].append(run(v))
b = statistics.median(res["bare"])
print("| epoch, training steps only | CPU s (median) | x bare |\n|---|---|---|")
for v, xs in res.items():
    print(f"| {v} | {statistics.median(xs):.3f} | {statistics.median(xs) / b:.3f} |")
