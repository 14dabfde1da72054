"""The distribution-reweighted bucket sampler: draws training rows so that the target z follows a chosen
distribution instead of the data's (which is dominated by the interaction point and lopsided background).

z in [-1, 1] is split into n equal buckets; bucket i is drawn with probability p_i from the configured
distribution, then a row uniformly inside it. Everything is vectorised: drawing a million indices is a
handful of numpy calls.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
from scipy import stats

from neuro_trigger.errors import clip
from neuro_trigger.registry import MAX_BUCKETS

__all__ = ["MIN_MASS", "BucketSampler", "bucket_probabilities"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # indices drawn per call of sample() in epoch_batches
_BLOCK = 1 << 15  # indices drawn per pass of the vectorised kernel
MIN_MASS = 1e-9  # a distribution with less probability than this on z in [-1, 1] puts no weight there


def bucket_probabilities(dist: dict) -> tuple[np.ndarray, np.ndarray]:
    """Bucket edges (n+1,) over [-1, 1] and the probability of each of the n buckets.

    `dist` is {"n_buckets": n, "inf_bounds": bool, "norm": {"mean", "std"}} or
    {..., "uniform": {"lower", "upper"}}. p_i = CDF(upper_i) - CDF(lower_i); with `inf_bounds`
    the outermost buckets reach to -inf/+inf (so p sums to 1 by itself), otherwise p is
    normalised to sum 1. The edges returned are always the finite ones over [-1, 1]; rows outside
    are clipped into the outer buckets by the sampler. Raises ValueError when n is outside
    1..MAX_BUCKETS or the distribution puts (almost, < MIN_MASS) no probability on [-1, 1].
    """
    n = int(dist["n_buckets"])
    if not 1 <= n <= MAX_BUCKETS:
        raise ValueError(f"n_buckets must be in 1..{MAX_BUCKETS}, got {clip(str(n))}")
    if "norm" in dist:
        params = dist["norm"]
        distribution = stats.norm(loc=float(params["mean"]), scale=float(params["std"]))
    elif "uniform" in dist:
        params = dist["uniform"]
        lower, upper = float(params["lower"]), float(params["upper"])
        distribution = stats.uniform(loc=lower, scale=upper - lower)
    else:
        raise ValueError(f"distribution needs a 'norm' or 'uniform' entry, got keys {sorted(dist)}")

    edges = np.linspace(-1.0, 1.0, n + 1)
    cdf_at = edges.copy()
    if dist.get("inf_bounds", False):
        cdf_at[0], cdf_at[-1] = -np.inf, np.inf
    p = np.diff(distribution.cdf(cdf_at))
    p = np.clip(p, 0.0, None)  # guard against tiny negative rounding
    total = p.sum()
    if not np.all(np.isfinite(p)) or not total >= MIN_MASS:
        raise ValueError(f"the distribution {clip(repr(dist))} puts no probability on z in [-1, 1] "
                         f"(bucket probabilities sum to {total:.3g})")
    if not dist.get("inf_bounds", False):
        p = p / total
    return edges, p


def bucket_weights(z: np.ndarray, dist: dict) -> np.ndarray:
    """A weight per row so that the rows' z, weighted, follow the bucket probabilities of `dist` as the
    sampler draws them: p(bucket) / rows in the bucket, summing to 1 (buckets without rows dropped and the
    rest renormalised, as the sampler does). A loss averaged with these weights is the loss the reweighted
    training aims at."""
    edges, probabilities = bucket_probabilities(dist)
    bucket = np.searchsorted(edges[1:-1], np.asarray(z), side="right")
    counts = np.bincount(bucket, minlength=probabilities.size)
    used = counts > 0
    mass = probabilities[used].sum()
    if mass <= 0:
        raise ValueError("bucket weights: the distribution gives no probability to the buckets that have rows")
    per_row = np.where(used, probabilities / np.maximum(counts, 1), 0.0) / mass
    return per_row[bucket]


class BucketSampler:
    """Draws row positions into `z` so that the sampled z follow the bucket probabilities.

    Empty buckets are dropped and the remaining probabilities renormalised (with a warning): the
    mapping bucket -> probability is kept by bucket index, never by position among non-empty ones.
    """

    def __init__(self, z: np.ndarray, dist: dict, seed: int) -> None:
        z = np.asarray(z)
        if z.ndim != 1:
            raise ValueError(f"z must be one-dimensional, got shape {z.shape}")
        if z.size == 0:
            raise ValueError("bucket sampler: no rows to sample from (all buckets empty)")
        self.edges, self.probabilities = bucket_probabilities(dist)
        n_buckets = self.probabilities.size
        self._n_rows = int(z.size)
        self._rng = np.random.default_rng(seed)

        # Bucket of each row: lower edge inclusive, z == 1 in the last bucket, outside values clipped.
        bucket = np.searchsorted(self.edges[1:-1], z, side="right")
        self.counts = np.bincount(bucket, minlength=n_buckets).astype(np.int64)
        small = np.uint8 if n_buckets <= 256 else np.uint16 if n_buckets <= 65536 else np.int64
        self._rows_by_bucket = np.argsort(bucket.astype(small), kind="stable").astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])

        self.used_buckets = np.flatnonzero(self.counts > 0)
        empty = np.flatnonzero(self.counts == 0)
        mass = float(self.probabilities[self.used_buckets].sum())
        if mass <= 0:
            raise ValueError(
                f"bucket sampler: the distribution gives no probability to the non-empty buckets "
                f"{clip(str(self.used_buckets.tolist()))} (counts {clip(str(self.counts[self.used_buckets].tolist()))})"
            )
        if empty.size:
            shown = empty[:20]  # enough for the message, which is clipped anyway; never one per bucket
            ranges = clip(", ".join(f"{i} [{self.edges[i]:.3g}, {self.edges[i + 1]:.3g}]" for i in shown)
                          + (", ..." if empty.size > shown.size else ""))
            log.warning(
                "bucket sampler: %d of %d buckets have no rows (%s) holding probability mass %.4g; "
                "they are dropped and the other buckets renormalised",
                empty.size,
                n_buckets,
                ranges,
                float(self.probabilities[empty].sum()),
            )
        self.used_probabilities = self.probabilities[self.used_buckets] / mass
        self._build_tables(starts[self.used_buckets], self.counts[self.used_buckets])

    def _build_tables(self, starts: np.ndarray, counts: np.ndarray) -> None:
        """Precompute what `sample` gathers per drawn bucket (k = index among the used buckets).

        One uniform u per sample picks both the bucket (k with cum[k-1] <= u < cum[k]) and the row
        inside it (its relative position within [cum[k-1], cum[k]) scaled to the bucket's rows).
        The bucket is found with a guide table over [0, 1): cell j = floor(u * M) stores the first
        candidate bucket, and a few vectorised corrections step over the boundaries inside a cell,
        which is several times faster than np.searchsorted for random u.
        """
        cum = np.minimum(np.cumsum(self.used_probabilities), 1.0)
        # From the last bucket with p > 0 on, cum is exactly 1: uniforms in [0, 1) then always land
        # in a bucket, and never in a trailing zero-probability one through rounding.
        cum[np.flatnonzero(self.used_probabilities > 0)[-1] :] = 1.0
        lower = np.concatenate([[0.0], cum[:-1]])
        width = cum - lower
        k = cum.size
        self._cum = cum
        self._lower = lower
        with np.errstate(divide="ignore", invalid="ignore"):
            self._scale = np.where(width > 0, counts / width, 0.0)  # zero-width buckets are never drawn
        self._start = starts.astype(np.float64)
        self._last = (starts + counts - 1).astype(np.int64)
        self._guide_size = max(4096, 1 << int(8 * k).bit_length())
        cells = np.arange(self._guide_size + 1) / self._guide_size
        first = np.minimum(np.searchsorted(cum, cells, side="right"), k - 1)
        self._guide = first[:-1].astype(np.intp)
        self._corrections = int(np.max(first[1:] - first[:-1]))

    def __len__(self) -> int:
        """Rows in z: the number of indices one epoch yields."""
        return self._n_rows

    def num_batches(self, batch_size: int) -> int:
        """Batches per epoch for `epoch_batches(batch_size)`."""
        return -(-self._n_rows // batch_size)

    def sample(self, n: int) -> np.ndarray:
        """`n` positions into z (int64), drawn with replacement: a bucket by p, then a row inside it."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        out = np.empty(n, dtype=np.int64)
        # Blocks small enough that the temporaries stay in the CPU cache.
        for start in range(0, n, _BLOCK):
            self._sample_into(out[start : start + _BLOCK])
        return out

    def _sample_into(self, out: np.ndarray) -> None:
        u = self._rng.random(out.size)
        bucket = self._bucket_of(u)
        pos = ((u - self._lower[bucket]) * self._scale[bucket] + self._start[bucket]).astype(np.int64)
        np.minimum(pos, self._last[bucket], out=pos)  # rounding can reach one past the bucket's end
        np.take(self._rows_by_bucket, pos, out=out)

    def _bucket_of(self, u: np.ndarray) -> np.ndarray:
        """Index among the used buckets of each u in [0, 1): np.searchsorted(cum, u, "right"), faster."""
        bucket = self._guide[(u * self._guide_size).astype(np.intp)]
        for _ in range(self._corrections):
            bucket += u >= self._cum[bucket]
        return bucket

    def epoch_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield index arrays of `batch_size` (the last may be smaller), len(z) indices in total."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        per_chunk = max(1, _CHUNK // batch_size) * batch_size
        remaining = self._n_rows
        while remaining > 0:
            chunk = self.sample(min(per_chunk, remaining))
            remaining -= chunk.size
            for start in range(0, chunk.size, batch_size):
                yield chunk[start : start + batch_size]
