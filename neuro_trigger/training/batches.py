"""Whole batches sliced from in-memory tensors: no per-sample __getitem__, no collate.

Lightning's loop costs about half a millisecond per step, more than a step of the 27-81-2 network
at small batch sizes. So each item this iterable yields is a *chunk* of several mini-batches
(K x B x 27); the module takes one optimiser step per mini-batch, so training is unchanged.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from neuro_trigger.data.sampling import BucketSampler

SAMPLES_PER_CHUNK = 16384  # about 1 ms of work per Lightning step on one CPU core
# Rows per validation or prediction slice: activations of 16384 x 81 floats stay in the CPU caches;
# 262144-row slices made the same pass twice as slow (0.60 s vs 0.30 s for 670k rows on one core).
EVAL_SLICE_ROWS = 16384


def chunk_size(batch_size: int) -> int:
    """Mini-batches per Lightning step."""
    return max(1, SAMPLES_PER_CHUNK // batch_size)


def device_columns(x: torch.Tensor, y: torch.Tensor, rows: np.ndarray, device: torch.device):
    """The tensors batches are sliced from, and the index of the expert's rows into them.

    On the CPU the shared columns are indexed directly (no copy of the expert's data); on an
    accelerator the expert's rows are copied to the device once, so batches never cross the bus.
    """
    rows_t = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
    if device.type == "cpu":
        return x, y, rows_t
    return (x.index_select(0, rows_t).to(device), y.index_select(0, rows_t).to(device),
            torch.arange(len(rows_t), device=device))


class TrainBatches:
    """One epoch of training chunks for one expert: a shuffled permutation, or the reweighted sampler.

    Iterating yields (x, y) of shape (K, B, in) and (K, B, out), whole mini-batches of B rows (the last
    chunk may hold fewer of them). When the epoch's rows are not a multiple of B, the R < B rows left
    over come after the chunks as one more item of shape (1, R, in): the epoch's last mini-batch, one
    more optimiser step, its loss a mean over its rows, as a DataLoader with drop_last=False gives it.
    A single row left over joins the mini-batch before it instead (1 x (B+1) rows): BatchNorm cannot
    train on one row. So every row of the epoch is trained on once, in ceil(rows / B) optimiser steps
    (floor(rows / B) when one row is left over). With `drop_last` the rows left over are skipped, as
    DataLoader's drop_last does (at most B-1, a different set each epoch), and every step has B rows.

    With `dist` an epoch draws as many rows as the expert has, whether or not `drop_last` leaves the
    last of them out: the sampler's draws, and so the seeded order of the rows, do not depend on it.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, rows: np.ndarray, batch_size: int,
                 seed: int, dist: dict | None = None, device: torch.device | None = None,
                 drop_last: bool = False) -> None:
        device = device or torch.device("cpu")
        self.x, self.y, self.index = device_columns(x, y, rows, device)
        self.batch_size = min(batch_size, len(rows))
        self.k = chunk_size(self.batch_size)
        self.n = len(rows)
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.sampler = None
        if dist is not None:
            z = y[torch.from_numpy(np.asarray(rows, dtype=np.int64)), 0].numpy()
            self.sampler = BucketSampler(z, dist, seed)
        self.generator = torch.Generator().manual_seed(seed)

    def _split(self) -> tuple[int, int]:
        """(rows yielded as chunks of whole mini-batches, rows in the one item after them: 0 for none)."""
        whole = (self.n // self.batch_size) * self.batch_size
        left = self.n - whole
        if self.drop_last or left == 0:
            return whole, 0
        if left == 1:  # the one row joins the last whole mini-batch
            return whole - self.batch_size, self.batch_size + 1
        return whole, left

    def __len__(self) -> int:
        chunked, tail = self._split()
        return -(-(chunked // self.batch_size) // self.k) + (tail > 0)

    def _order(self) -> torch.Tensor:
        if self.sampler is not None:
            positions = torch.from_numpy(self.sampler.sample(self.n))
        else:
            positions = torch.randperm(self.n, generator=self.generator)
        return positions.to(self.index.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.epoch += 1
        positions = self._order()
        chunked, tail = self._split()
        chunk_rows = self.k * self.batch_size
        for start in range(0, chunked, chunk_rows):
            idx = self.index[positions[start:min(start + chunk_rows, chunked)]]
            x = self.x.index_select(0, idx).view(-1, self.batch_size, self.x.shape[1])
            y = self.y.index_select(0, idx).view(-1, self.batch_size, self.y.shape[1])
            yield x, y
        if tail:
            idx = self.index[positions[chunked:chunked + tail]]
            yield self.x.index_select(0, idx).unsqueeze(0), self.y.index_select(0, idx).unsqueeze(0)


class EvalBatches:
    """All rows of one split for one expert, in large slices, in row order: for validation and prediction."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, y_old: torch.Tensor, rows: np.ndarray,
                 device: torch.device | None = None, slice_rows: int = EVAL_SLICE_ROWS) -> None:
        device = device or torch.device("cpu")
        self.x, self.y, self.index = device_columns(x, y, rows, device)
        self.y_old = y_old.index_select(0, torch.from_numpy(np.asarray(rows, dtype=np.int64))).to(device)
        self.slice_rows = slice_rows
        self.n = len(rows)

    def __len__(self) -> int:
        return max(1, -(-self.n // self.slice_rows))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for start in range(0, max(self.n, 1), self.slice_rows):
            idx = self.index[start:start + self.slice_rows]
            yield (self.x.index_select(0, idx), self.y.index_select(0, idx),
                   self.y_old[start:start + self.slice_rows])
