"""Batches bounded by total padded duration, bucketed by length, resumable mid-epoch.

:class:`DurationBatchSampler` is a batch sampler for ``torch.utils.data.DataLoader``
(``batch_sampler=``). One epoch is planned from ``(seed, epoch)`` alone:

1. sort utterances by duration and cut them into ``num_buckets`` buckets of equal count;
2. shuffle inside each bucket and fill batches greedily while
   ``batch_size * longest_duration <= max_seconds`` (the padded batch, which is what memory
   and compute pay for); an utterance longer than ``max_seconds`` forms a batch of its own;
3. shuffle the order of all batches;
4. with ``world_size > 1`` drop the last ``num_batches % world_size`` batches (different ones
   every epoch, as the order is shuffled) and give rank ``r`` batches ``r, r + W, r + 2W, ...``:
   disjoint across ranks and the same count on each, so no rank waits at a collective.

Because the plan is a pure function of ``(seed, epoch)``, the position inside an epoch (batches
handed out so far) is all that :meth:`DurationBatchSampler.state_dict` needs to resume exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

logger = logging.getLogger(__name__)


class DurationBatchSampler:
    """Yield lists of dataset indices whose padded duration stays under ``max_seconds``.

    Args:
        durations: duration in seconds of every dataset item, indexed like the dataset.
        max_seconds: bound on ``len(batch) * max(duration in batch)``.
        num_buckets: length buckets (1 = no bucketing).
        shuffle: shuffle inside buckets and the batch order; False gives batches in
            increasing length.
        seed: base seed; epoch ``e`` uses the generator seeded with ``(seed, e)``.
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of data-parallel processes.
        max_batch_size: optional cap on utterances per batch.

    Raises:
        ValueError: for empty ``durations``, non-positive or NaN durations or ``max_seconds``,
            ``num_buckets < 1``, a rank outside ``[0, world_size)``, or fewer batches than ranks.

    Example::

        sampler = DurationBatchSampler(durations, max_seconds=200, seed=1, rank=r, world_size=w)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
        sampler.set_epoch(epoch)
        for step, batch in enumerate(loader): ...
        # checkpoint: sampler.state_dict(consumed=step + 1)  (the loader prefetches)
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_seconds: float,
        *,
        num_buckets: int = 10,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        max_batch_size: int | None = None,
    ):
        durations = np.asarray(durations, dtype=np.float64)
        if durations.ndim != 1 or len(durations) == 0:
            raise ValueError(
                f"durations must be a non-empty 1-D sequence, found shape {durations.shape}"
            )
        if not np.all(durations > 0):  # also catches NaN
            bad = int(np.flatnonzero(~(durations > 0))[0])
            raise ValueError(
                f"durations must be positive seconds, found {durations[bad]} at index {bad}"
            )
        if not max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, found {max_seconds}")
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, found {num_buckets}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size: expected >= 1 or None, found {max_batch_size}")
        self.durations = durations
        self.max_seconds = float(max_seconds)
        self.num_buckets = min(num_buckets, len(durations))
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.max_batch_size = max_batch_size
        self.epoch = 0
        self.position = 0  # batches of this epoch already handed out on this rank
        self._plan: list[list[int]] | None = None
        self._plan_epoch: int | None = None
        too_long = int(np.sum(durations > max_seconds))
        if too_long:
            logger.warning(
                "%d utterances are longer than max_seconds=%g; each is a batch of its own",
                too_long, max_seconds,
            )
        if len(self._epoch_batches(0)) == 0:
            raise ValueError(
                f"only {len(self._all_batches(0))} batches for world_size={world_size}; "
                "lower max_seconds or world_size"
            )

    def _all_batches(self, epoch: int) -> list[list[int]]:
        """Every batch of an epoch, all ranks, before the rank split."""
        rng = np.random.default_rng([self.seed, epoch])
        order = np.argsort(self.durations, kind="stable")
        batches = []
        for bucket in np.array_split(order, self.num_buckets):
            if self.shuffle:
                bucket = rng.permutation(bucket)
            batch: list[int] = []
            longest = 0.0
            for index in bucket.tolist():
                new_longest = max(longest, self.durations[index])
                full = self.max_batch_size is not None and len(batch) >= self.max_batch_size
                if batch and (full or (len(batch) + 1) * new_longest > self.max_seconds):
                    batches.append(batch)
                    batch, new_longest = [], self.durations[index]
                batch.append(index)
                longest = new_longest
            if batch:
                batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of an epoch (cached for the current epoch)."""
        if self._plan_epoch != epoch:
            batches = self._all_batches(epoch)
            usable = len(batches) - len(batches) % self.world_size
            self._plan = batches[self.rank:usable:self.world_size]
            self._plan_epoch = epoch
        return self._plan

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch."""
        self.epoch = epoch
        self.position = 0

    def __len__(self) -> int:
        """Batches of the current epoch on this rank (including those already handed out)."""
        return len(self._epoch_batches(self.epoch))

    def __iter__(self) -> Iterator[list[int]]:
        """Yield the remaining batches of the current epoch, then move to the next epoch."""
        batches = self._epoch_batches(self.epoch)
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield list(batch)
        self.epoch += 1
        self.position = 0

    def state_dict(self, consumed: int | None = None) -> dict:
        """The sampler's position, to resume exactly with :meth:`load_state_dict`.

        Args:
            consumed: batches of the current epoch the training loop has actually used. Give
                it when iterating through a ``DataLoader``, which draws batches ahead of the
                loop; ``None`` uses the batches this sampler has handed out.

        Returns:
            a dict of plain ints and floats (fits in a checkpoint).
        """
        position = self.position if consumed is None else consumed
        if not 0 <= position <= len(self):
            raise ValueError(f"consumed must be in [0, {len(self)}], found {consumed}")
        return {
            "epoch": self.epoch,
            "position": position,
            "seed": self.seed,
            "world_size": self.world_size,
            "num_items": len(self.durations),
            "max_seconds": self.max_seconds,
            "num_buckets": self.num_buckets,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume at the epoch and position saved by :meth:`state_dict`.

        Raises:
            ValueError: when the state was saved by a sampler with other data or settings,
                whose batches would differ.
        """
        for key in ("seed", "world_size", "num_items", "max_seconds", "num_buckets"):
            mine = getattr(self, key) if key != "num_items" else len(self.durations)
            if state.get(key) != mine:
                raise ValueError(
                    f"state has {key}={state.get(key)!r} but this sampler has {mine!r}; "
                    "resume with the same data and sampler settings"
                )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
