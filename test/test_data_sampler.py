"""Duration batch sampler: budget, determinism, exact mid-epoch resume, DDP sharding."""

import itertools

import numpy as np
import pytest

from xtrans.data.sampler import DurationBatchSampler


@pytest.fixture
def durations():
    return np.random.default_rng(0).uniform(0.5, 12.0, size=500).tolist()


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_every_item_once_and_padded_duration_within_budget(durations):
    sampler = DurationBatchSampler(durations, max_seconds=60.0, num_buckets=8, seed=3)
    batches = _epoch(sampler, 0)
    flat = sorted(itertools.chain.from_iterable(batches))
    assert flat == list(range(len(durations)))
    for batch in batches:
        assert len(batch) * max(durations[i] for i in batch) <= 60.0
    spread = np.mean([np.ptp([durations[i] for i in b]) for b in batches])
    assert spread < 2.0  # bucketed: lengths within a batch are close


def test_deterministic_given_seed_and_epoch(durations):
    a = DurationBatchSampler(durations, max_seconds=40.0, seed=7)
    b = DurationBatchSampler(durations, max_seconds=40.0, seed=7)
    assert _epoch(a, 2) == _epoch(b, 2)
    assert _epoch(a, 1) != _epoch(a, 2)
    assert _epoch(DurationBatchSampler(durations, max_seconds=40.0, seed=8), 2) != _epoch(b, 2)


def test_iteration_advances_epoch(durations):
    sampler = DurationBatchSampler(durations, max_seconds=40.0, seed=1)
    first, second = list(sampler), list(sampler)
    assert first == _epoch(DurationBatchSampler(durations, max_seconds=40.0, seed=1), 0)
    assert second == _epoch(DurationBatchSampler(durations, max_seconds=40.0, seed=1), 1)


@pytest.mark.parametrize("stop_after", [0, 1, 17])
def test_mid_epoch_restore_continues_exactly(durations, stop_after):
    reference = DurationBatchSampler(durations, max_seconds=40.0, seed=5)
    reference.set_epoch(3)
    uninterrupted = list(reference) + list(reference)  # epoch 3 and 4

    sampler = DurationBatchSampler(durations, max_seconds=40.0, seed=5)
    sampler.set_epoch(3)
    it = iter(sampler)
    seen = [next(it) for _ in range(stop_after)]
    state = sampler.state_dict()

    restored = DurationBatchSampler(durations, max_seconds=40.0, seed=5)
    restored.load_state_dict(state)
    resumed = seen + list(restored) + list(restored)
    assert resumed == uninterrupted


def test_state_dict_with_consumed_count_for_prefetching_loaders(durations):
    sampler = DurationBatchSampler(durations, max_seconds=40.0, seed=5)
    it = iter(sampler)
    drawn = [next(it) for _ in range(6)]  # a DataLoader drew 6, the loop used 4
    state = sampler.state_dict(consumed=4)
    restored = DurationBatchSampler(durations, max_seconds=40.0, seed=5)
    restored.load_state_dict(state)
    assert next(iter(restored)) == drawn[4]
    with pytest.raises(ValueError, match="consumed must be in"):
        sampler.state_dict(consumed=10_000)


def test_restore_into_different_sampler_is_refused(durations):
    state = DurationBatchSampler(durations, max_seconds=40.0, seed=5).state_dict()
    with pytest.raises(ValueError, match="state has max_seconds=40.0 but this sampler has 30.0"):
        DurationBatchSampler(durations, max_seconds=30.0, seed=5).load_state_dict(state)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shards_are_disjoint_and_equal_in_count(durations, world_size):
    shards = [
        _epoch(DurationBatchSampler(durations, 40.0, seed=2, rank=r, world_size=world_size), 1)
        for r in range(world_size)
    ]
    assert len({len(s) for s in shards}) == 1
    items = [set(itertools.chain.from_iterable(s)) for s in shards]
    for a, b in itertools.combinations(items, 2):
        assert not a & b
    single = _epoch(DurationBatchSampler(durations, 40.0, seed=2), 1)
    dropped = len(single) % world_size
    assert sum(len(s) for s in shards) == len(single) - dropped
    assert sorted(map(tuple, itertools.chain.from_iterable(shards))) == sorted(
        map(tuple, single[: len(single) - dropped])
    )


def test_overlong_utterance_gets_its_own_batch():
    sampler = DurationBatchSampler([1.0, 1.0, 50.0, 1.0], 10.0, num_buckets=1, shuffle=False)
    assert sorted(map(sorted, sampler)) == [[0, 1, 3], [2]]


def test_max_batch_size_caps_batches():
    sampler = DurationBatchSampler([1.0] * 10, max_seconds=100.0, max_batch_size=4, num_buckets=1,
                                   shuffle=False)
    assert [len(b) for b in sampler] == [4, 4, 2]


def test_argument_errors():
    with pytest.raises(ValueError, match="durations must be a non-empty"):
        DurationBatchSampler([], 10.0)
    with pytest.raises(ValueError, match="must be positive seconds, found nan at index 1"):
        DurationBatchSampler([1.0, float("nan")], 10.0)
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        DurationBatchSampler([1.0], 0.0)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got 2"):
        DurationBatchSampler([1.0], 10.0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="num_buckets must be >= 1"):
        DurationBatchSampler([1.0], 10.0, num_buckets=0)
    with pytest.raises(ValueError, match="lower max_seconds or world_size"):
        DurationBatchSampler([1.0, 1.0], 10.0, num_buckets=1, world_size=2)


def test_max_batch_size_error():
    with pytest.raises(ValueError, match="max_batch_size: expected >= 1 or None, found 0"):
        DurationBatchSampler([1.0], 10.0, max_batch_size=0)
