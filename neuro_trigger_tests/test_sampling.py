"""Tests of the bucket probabilities and the reweighting bucket sampler."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy import stats

from neuro_trigger.data import sampling as sampling_module
from neuro_trigger.data.sampling import BucketSampler, bucket_probabilities


def normal(n: int, mean: float, std: float, inf_bounds: bool = False) -> dict:
    return {"n_buckets": n, "inf_bounds": inf_bounds, "norm": {"mean": mean, "std": std}}


def uniform(n: int, lower: float, upper: float, inf_bounds: bool = False) -> dict:
    return {"n_buckets": n, "inf_bounds": inf_bounds, "uniform": {"lower": lower, "upper": upper}}


def phi(x: float, mean: float, std: float) -> float:
    return 0.5 * (1 + math.erf((x - mean) / (std * math.sqrt(2))))


def bucket_of(sampler: BucketSampler, z: np.ndarray) -> np.ndarray:
    """Independent bucket assignment for checks: equal buckets over [-1, 1], z = 1 in the last, clipped."""
    n = sampler.probabilities.size
    return np.clip(np.floor((np.asarray(z, np.float64) + 1) / 2 * n), 0, n - 1).astype(int)


# ---------------------------------------------------------------------------------------------------
# bucket_probabilities


def test_normal_probabilities_by_hand():
    edges, p = bucket_probabilities(normal(4, 0.1, 0.5))
    np.testing.assert_allclose(edges, [-1, -0.5, 0, 0.5, 1])
    raw = [phi(b, 0.1, 0.5) - phi(a, 0.1, 0.5) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    np.testing.assert_allclose(p, np.array(raw) / sum(raw), rtol=1e-12)
    # Phi at z-scores -2.2, -1.2, -0.2, 0.8, 1.8 from a table: 0.013903, 0.115070, 0.420740, 0.788145,
    # 0.964070 -> bucket masses 0.101167, 0.305670, 0.367405, 0.175925, which sum to 0.950167.
    np.testing.assert_allclose(p, [0.106472, 0.321702, 0.386674, 0.185152], atol=2e-6)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_normal_probabilities_match_scipy_with_inf_bounds():
    edges, p = bucket_probabilities(normal(11, 0.2, 0.4, inf_bounds=True))
    cdf = stats.norm(loc=0.2, scale=0.4).cdf
    expected = np.diff(cdf(np.r_[-np.inf, edges[1:-1], np.inf]))
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)  # by itself, no normalisation
    assert p[0] == pytest.approx(cdf(edges[1]), rel=1e-12)  # first bucket reaches -inf
    assert p[-1] == pytest.approx(1 - cdf(edges[-2]), rel=1e-12)  # last bucket reaches +inf
    # Without inf_bounds, the outer buckets stop at +-1 and everything is renormalised.
    _, p_finite = bucket_probabilities(normal(11, 0.2, 0.4))
    inner = np.diff(cdf(edges))
    np.testing.assert_allclose(p_finite, inner / inner.sum(), rtol=1e-12)
    assert p_finite[-1] < p[-1]


@pytest.mark.parametrize(
    ("dist", "expected"),
    [
        (uniform(5, -1, 1), [0.2] * 5),
        (uniform(4, -0.5, 0.5), [0, 0.5, 0.5, 0]),
        (uniform(4, -0.75, 0.25), [0.25, 0.5, 0.25, 0]),
        (uniform(2, -2, 2, inf_bounds=True), [0.5, 0.5]),
        (uniform(2, 0, 4, inf_bounds=True), [0, 1]),
        (uniform(2, 0, 4), [0, 1]),
    ],
)
def test_uniform_probabilities(dist, expected):
    edges, p = bucket_probabilities(dist)
    assert edges.shape == (dist["n_buckets"] + 1,)
    np.testing.assert_allclose(p, expected, atol=1e-12)


def test_one_bucket_and_invalid_counts():
    _, p = bucket_probabilities(normal(1, 0, 0.3))
    np.testing.assert_allclose(p, [1.0])
    with pytest.raises(ValueError, match="n_buckets"):
        bucket_probabilities(normal(0, 0, 0.3))


# ---------------------------------------------------------------------------------------------------
# BucketSampler


def test_bucket_assignment_edges_and_clipping():
    # 4 buckets: [-1,-.5) [-.5,0) [0,.5) [.5,1]; z = 1 belongs to the last, outside values are clipped.
    z = np.array([-1.0, -0.75, -0.5, 0.0, 0.25, 0.5, 1.0, -3.0, 2.5], np.float32)
    s = BucketSampler(z, uniform(4, -1, 1), seed=0)
    assert s.counts.tolist() == [3, 1, 2, 3]
    assert s.used_buckets.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(s.edges, [-1, -0.5, 0, 0.5, 1])
    only_top = BucketSampler(np.array([1.0, 1.0]), uniform(4, -1, 1), seed=0)
    assert only_top.counts.tolist() == [0, 0, 0, 2]


def test_sampled_bucket_frequencies_follow_p():
    rng = np.random.default_rng(11)
    z = np.concatenate([rng.normal(0, 0.05, 60_000), rng.uniform(-1, 1, 40_000)]).astype(np.float32)
    s = BucketSampler(z, normal(11, 0.0, 0.4), seed=1)
    assert s.used_buckets.tolist() == list(range(11))
    idx = s.sample(200_000)
    assert idx.dtype == np.int64 and idx.min() >= 0 and idx.max() < z.size
    observed = np.bincount(bucket_of(s, z[idx]), minlength=11)
    assert stats.chisquare(observed, s.probabilities * idx.size).pvalue > 1e-3


def test_rows_within_a_bucket_are_uniform():
    # Three buckets with 10, 40 and 7 rows; every row of a bucket must be drawn equally often.
    z = np.concatenate([np.full(10, -0.9), np.full(40, 0.1), np.full(7, 0.8)])
    z = np.random.default_rng(2).permutation(z)
    s = BucketSampler(z, uniform(3, -1, 1), seed=3)
    counts = np.bincount(s.sample(150_000), minlength=z.size)
    for b in range(3):
        rows = np.flatnonzero(bucket_of(s, z) == b)
        assert stats.chisquare(counts[rows]).pvalue > 1e-3
        assert counts[rows].sum() / 150_000 == pytest.approx(1 / 3, abs=0.01)


def test_empty_buckets_are_dropped_with_warning(caplog):
    # Rows only in buckets 0, 1, 4, 7, 10 of 11 (different counts each). A sampler that maps the
    # non-empty buckets onto p by their position (p[0..4]) would draw very different frequencies.
    centres = np.linspace(-1, 1, 12)[:-1] + 1 / 11
    used = [0, 1, 4, 7, 10]
    z = np.concatenate([np.full(n, centres[b]) for b, n in zip(used, [500, 80, 3000, 40, 900], strict=True)])
    dist = normal(11, 0.3, 0.4)
    _, p = bucket_probabilities(dist)
    with caplog.at_level(logging.WARNING, logger=sampling_module.__name__):
        s = BucketSampler(z, dist, seed=4)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "6 of 11 buckets" in message
    for b in (2, 3, 5, 6, 8, 9):
        assert f"{b} [" in message
    assert f"{p[[2, 3, 5, 6, 8, 9]].sum():.4g}" in message

    np.testing.assert_array_equal(s.probabilities, p)  # as configured
    assert s.used_buckets.tolist() == used
    np.testing.assert_allclose(s.used_probabilities, p[used] / p[used].sum())
    assert s.used_probabilities.sum() == pytest.approx(1.0)

    n = 200_000
    observed = np.bincount(bucket_of(s, z[s.sample(n)]), minlength=11)
    assert observed[[2, 3, 5, 6, 8, 9]].sum() == 0
    assert stats.chisquare(observed[used], s.used_probabilities * n).pvalue > 1e-3


def test_no_warning_without_empty_buckets(caplog):
    z = np.linspace(-1, 1, 1000)
    with caplog.at_level(logging.WARNING, logger=sampling_module.__name__):
        BucketSampler(z, normal(11, 0, 0.4), seed=0)
    assert not caplog.records


def test_zero_probability_buckets_are_never_drawn():
    z = np.linspace(-1, 1, 2000)
    s = BucketSampler(z, uniform(4, -0.5, 0.5), seed=5)
    assert s.used_buckets.tolist() == [0, 1, 2, 3]  # non-empty, but p = 0 for 0 and 3
    buckets = bucket_of(s, z[s.sample(50_000)])
    assert set(np.unique(buckets).tolist()) == {1, 2}


def test_no_rows_or_no_mass_raises():
    with pytest.raises(ValueError, match="no rows"):
        BucketSampler(np.array([], np.float32), normal(11, 0, 0.4), seed=0)
    with pytest.raises(ValueError, match="no probability"):
        BucketSampler(np.array([-0.9, -0.8]), uniform(4, 0, 1), seed=0)


def test_bucket_lookup_equals_searchsorted():
    """The guide-table bucket lookup must agree with searchsorted, also at and around the boundaries
    and with many tiny buckets (several boundaries inside one guide cell)."""
    z = np.linspace(-1, 1, 5000)
    for dist in (normal(11, 0, 0.4), normal(300, 0.1, 0.05), uniform(7, -0.3, 0.6)):
        s = BucketSampler(z, dist, seed=0)
        cum = s._cum
        u = np.concatenate(
            [
                np.random.default_rng(0).random(100_000),
                cum[:-1],
                np.nextafter(cum[:-1], 0),
                np.nextafter(cum[:-1], 1),
                np.arange(4096) / 4096,
                [0.0, np.nextafter(1.0, 0)],
            ]
        )
        u = u[u < 1.0]  # the sampler draws u in [0, 1)
        np.testing.assert_array_equal(s._bucket_of(u), np.searchsorted(cum, u, side="right"))


def test_deterministic_for_a_seed():
    z = np.random.default_rng(6).uniform(-1, 1, 10_000)
    a = BucketSampler(z, normal(11, 0, 0.4), seed=42)
    b = BucketSampler(z, normal(11, 0, 0.4), seed=42)
    c = BucketSampler(z, normal(11, 0, 0.4), seed=43)
    first = a.sample(5000)
    np.testing.assert_array_equal(first, b.sample(5000))
    assert not np.array_equal(first, c.sample(5000))
    np.testing.assert_array_equal(a.sample(100_000), b.sample(100_000))  # also across blocks
    batches_a = list(a.epoch_batches(300))
    batches_b = list(b.epoch_batches(300))
    assert all(np.array_equal(x, y) for x, y in zip(batches_a, batches_b, strict=True))


@pytest.mark.parametrize(
    ("n_rows", "batch_size"), [(1000, 64), (1000, 1000), (1000, 1), (50, 4096), (700, 100)]
)
@pytest.mark.parametrize("chunk", [None, 100])
def test_epoch_batches_cover_len_z(monkeypatch, n_rows, batch_size, chunk):
    if chunk is not None:
        monkeypatch.setattr(sampling_module, "_CHUNK", chunk)
    z = np.random.default_rng(7).uniform(-1, 1, n_rows)
    s = BucketSampler(z, normal(11, 0, 0.4), seed=8)
    sizes = [b.size for b in s.epoch_batches(batch_size)]
    assert sum(sizes) == n_rows == len(s)
    assert len(sizes) == s.num_batches(batch_size)
    assert all(size == batch_size for size in sizes[:-1]) and 0 < sizes[-1] <= batch_size
    with pytest.raises(ValueError):
        next(s.epoch_batches(0))


def test_sample_zero_and_large_counts():
    s = BucketSampler(np.linspace(-1, 1, 100), normal(5, 0, 0.5), seed=9)
    assert s.sample(0).shape == (0,)
    idx = s.sample(3 * sampling_module._BLOCK + 17)  # several kernel blocks and a partial one
    assert idx.size == 3 * sampling_module._BLOCK + 17 and idx.min() >= 0 and idx.max() < 100


class ScriptedRng:
    """Stands in for the sampler's generator: returns given uniforms."""

    def __init__(self, u: np.ndarray) -> None:
        self.u = u

    def random(self, n: int) -> np.ndarray:
        assert n == self.u.size
        return self.u


def test_uniforms_at_bucket_boundaries_stay_in_their_bucket():
    """u just below a bucket's upper cumulative bound must give that bucket's last row, not the next
    bucket's first (rounding of the position inside the bucket)."""
    z = np.random.default_rng(10).uniform(-1, 1, 100_003)
    for dist in (normal(11, 0.1, 0.4), uniform(9, -1, 1), normal(64, 0, 0.3)):
        s = BucketSampler(z, dist, seed=0)
        cum = s._cum
        u = np.concatenate([[0.0], cum[:-1], np.nextafter(cum, 0), np.nextafter(cum[:-1], 1)])
        u = np.sort(u[(u >= 0) & (u < 1)])
        s._rng = ScriptedRng(u)
        idx = s.sample(u.size)
        expected = s.used_buckets[np.searchsorted(cum, u, side="right")]
        np.testing.assert_array_equal(bucket_of(s, z[idx]), expected)
