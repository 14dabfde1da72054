"""The experts' epoch metrics as their CSV loggers wrote them, and their mean over the experts: mean_expert/,
a TensorBoard run of its own beside the experts'."""
from __future__ import annotations

import math
from pathlib import Path


def read_expert_metrics(expert_dir: Path):
    """The expert's epoch metrics (csv/metrics.csv) as a DataFrame; None where there are none yet: no file, or
    an empty one (an expert killed before its loggers first wrote)."""
    import pandas as pd

    path = expert_dir / "csv" / "metrics.csv"
    try:
        return pd.read_csv(path, encoding="utf-8")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None


def log_mean_over_experts(run_folder: Path, expert_keys: list[str]) -> Path | None:
    """Average each epoch-level metric over the experts (from their CSV logs) into mean_expert/ for
    TensorBoard, one event per epoch holding every metric. Written with torch's SummaryWriter: the run's parent
    process never imports lightning."""
    import pandas as pd
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    frames = []
    for key in expert_keys:
        table = read_expert_metrics(run_folder / key)
        if table is not None and "epoch" in table:
            frames.append(table.groupby("epoch").mean(numeric_only=True).drop(columns="step", errors="ignore"))
    if not frames:
        return None
    mean = pd.concat(frames).groupby(level=0).mean()
    log_dir = run_folder / "mean_expert"
    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for epoch, row in mean.iterrows():
            values = [Summary.Value(tag=str(name), simple_value=float(value)) for name, value in row.items()
                      if not math.isnan(value)]
            writer.file_writer.add_summary(Summary(value=values), int(epoch))
    return log_dir
