"""Per-epoch cost of a small expert (4 mini-batches of 2048, 2048 validation rows, baseline_v2's expert_2 Trainer,
200 epochs, early stopping off) against a raw loop, for the project checked out at ROOT, so that the code before a
change can be measured the same way (e.g. `git archive 487413e | tar -x -C /tmp/base`):

    python benchmarks/fixed_cost_probe.py ROOT [--noplots] [--profile]

Code without `fit_expert` is fitted with Lightning's validation loop. --noplots: no plot events; --profile: a
cProfile of the real path's fit instead, by cumulative time. The row per_epoch_fixed_cost of benchmarks/run.py
is the maintained measurement; this probe exists to measure old code."""
import cProfile
import math
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

root = sys.argv[1]
sys.path.insert(0, root)
import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from neuro_trigger import registry  # noqa: E402
from neuro_trigger.config.resolution import resolve_config  # noqa: E402
from neuro_trigger.training import expert as expert_mod  # noqa: E402
from neuro_trigger.training.batches import EVAL_SLICE_ROWS, EvalBatches, TrainBatches  # noqa: E402
from neuro_trigger.training.module import ExpertModule  # noqa: E402

torch.set_num_threads(1)
EPOCHS = 200
N_TRAIN, N_VAL = 4 * 2048, 2048
g = torch.Generator().manual_seed(3)
x = torch.rand(N_TRAIN + N_VAL, 27, generator=g) * 2 - 1
y = torch.tanh(x[:, :2] * 3 + x[:, 5:7])
y_old = y + 0.1 * torch.randn(N_TRAIN + N_VAL, 2, generator=g)
overrides = [f"epochs={EPOCHS}", "batch_size=2048", "early_stopping_patience=100000"]
if "--noplots" in sys.argv:
    overrides.append("plot_every=100000")
config = resolve_config({"extends": "baseline_v2"}, overrides)["experts"]["expert_2"]


class Timer(L.Callback):
    def __init__(self):
        self.starts, self.end = [], math.nan

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = time.perf_counter()


def ours(profile: cProfile.Profile | None = None) -> list[float]:
    L.seed_everything(config["seed"], verbose=False)
    train = TrainBatches(x, y, np.arange(N_TRAIN), 2048, config["seed"])
    val = EvalBatches(x, y, y_old, np.arange(N_TRAIN, N_TRAIN + N_VAL))
    d = Path(tempfile.mkdtemp())
    trainer, _ = expert_mod.build_trainer(config, d)
    timer = Timer()
    trainer.callbacks.append(timer)
    module = ExpertModule(config)
    if profile:
        profile.enable()
    if hasattr(expert_mod, "fit_expert"):
        expert_mod.fit_expert(trainer, module, train, val)
    else:
        trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    if profile:
        profile.disable()
    shutil.rmtree(d)
    b = [*timer.starts, timer.end]
    return [q - p for p, q in zip(b[:-1], b[1:], strict=True)][1:]


def raw() -> list[float]:
    c = config
    torch.manual_seed(c["seed"])
    model = registry.build_model(c["model"], c["in_size"], c["out_size"], c["act"])
    opt = registry.build_optimizer(c["optim"], model.parameters(), c["learning_rate"], c["weight_decay"])
    loss_fn = registry.build_loss(c["loss"])
    xe, ye, xv, yv = x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(EPOCHS):
        s = time.perf_counter()
        perm = torch.randperm(N_TRAIN, generator=gen)
        for i in range(0, N_TRAIN, 2048):
            bt = perm[i:i + 2048]
            loss = loss_fn(model(xe[bt]), ye[bt])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = torch.cat([model(xv[i:i + EVAL_SLICE_ROWS]) for i in range(0, len(xv), EVAL_SLICE_ROWS)])
            float(loss_fn(pred, yv))
        out.append(time.perf_counter() - s)
    return out[1:]


if "--profile" in sys.argv:
    p = cProfile.Profile()
    ours(p)
    st = pstats.Stats(p)
    st.sort_stats("cumulative").print_stats(120)
    sys.exit()
o, r = [], []
for rep in range(3):
    if rep % 2:
        r.append(raw())
    o.append(ours())
    if not rep % 2:
        r.append(raw())
n = min(map(len, o + r))
om = np.mean([min(run[i] for run in o) for i in range(n)])
rm = np.mean([min(run[i] for run in r) for i in range(n)])
print(f"{root}: ours {om * 1e3:.2f} ms/epoch, raw {rm * 1e3:.2f} ms/epoch, ratio {om / rm:.2f}; "
      f"repeat means ours {[round(np.mean(a) * 1e3, 2) for a in o]} raw {[round(np.mean(a) * 1e3, 2) for a in r]}")
