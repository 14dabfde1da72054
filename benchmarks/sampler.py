"""Group sampler: the reweighted BucketSampler vs a per-index Dataset + DataLoader."""
from __future__ import annotations

import time
from typing import Any

from benchmarks.common import Row, Sizes, best_time

DIST = {"n_buckets": 11, "inf_bounds": False, "norm": {"mean": 0.0, "std": 0.4}}


def bench_sampler(z: Any, sizes: Sizes, seed: int) -> list[Row]:
    """BucketSampler.sample(len(z)) (what TrainBatches draws per epoch) vs a per-index Dataset + DataLoader."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

    from neuro_trigger.data.sampling import BucketSampler, bucket_probabilities

    start = time.perf_counter()
    sampler = BucketSampler(z, DIST, seed)
    t_build = time.perf_counter() - start
    n = len(z)
    t_ours, _ = best_time(lambda: sampler.sample(n), sizes.sampler_repeats)

    class PerIndexSampling(Dataset):
        """Reference: each __getitem__ draws a bucket by its probability, then a row inside it."""

        def __init__(self) -> None:
            edges, p = bucket_probabilities(DIST)
            bucket = np.searchsorted(edges[1:-1], z, side="right")
            self.rows = [np.flatnonzero(bucket == b) for b in range(len(p))]
            used = [b for b in range(len(p)) if len(self.rows[b])]
            self.rows = [self.rows[b] for b in used]
            self.p = p[used] / p[used].sum()
            self.rng = np.random.default_rng(seed)

        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> int:
            rows = self.rows[self.rng.choice(len(self.p), p=self.p)]
            return int(rows[self.rng.integers(len(rows))])

    count = min(n, sizes.sampler_reference_indices)
    loader = DataLoader(PerIndexSampling(), batch_size=2048)
    start = time.perf_counter()
    drawn = 0
    for batch in loader:
        drawn += len(batch)
        if drawn >= count:
            break
    t_ref = time.perf_counter() - start
    assert isinstance(batch, torch.Tensor)
    ours, ref = n / t_ours, drawn / t_ref
    return [Row("bucket_sampler", f"reweighted sampling, 11 buckets, normal std 0.4: {n:,} indices",
                ours, "indices/s", "map-style Dataset drawing per __getitem__, DataLoader batch 2048", ref,
                ours / ref, "speed-up", ">= 5M indices/s and >= 50x", ours >= 5e6 and ours / ref >= 50,
                f"reference timed on {drawn:,} indices; sampler built once in {t_build:.3f} s",
                extra={"seconds": t_ours, "build_seconds": t_build})]
