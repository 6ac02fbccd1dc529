"""Streaming resampling (xtrans.data.resample): pieces in, the offline resampling out."""

import dataclasses

import pytest
import torch

from xtrans.data.resample import (
    BETA,
    ROLLOFF,
    ZERO_CROSSINGS,
    ResampleState,
    init_resample_state,
    resample,
    resample_chunk,
    resample_flush,
)


def _stream(x, rate, new_rate, sizes):
    state = init_resample_state(rate, new_rate)
    pieces, start = [], 0
    for n in sizes:
        y, state = resample_chunk(x[start:start + n], state)
        pieces.append(y)
        start += n
    assert start == x.shape[0]
    y, state = resample_flush(state)
    return torch.cat(pieces + [y]), state


def test_streaming_resampler_matches_whole_resampling():
    # moved from test_inference.py (it tested inference._StreamingResampler)
    x = torch.randn(7001, generator=torch.Generator().manual_seed(0))
    for rate in (8000, 22050, 44100, 48000):
        out, _ = _stream(x, rate, 16000, [613] * 11 + [7001 - 613 * 11])
        torch.testing.assert_close(out, resample(x, rate, 16000), atol=1e-5, rtol=0)


@pytest.mark.parametrize("rate, new_rate", [(8000, 16000), (16000, 8000), (44100, 16000), (11025, 16000),
                                            (16000, 16000)])
@pytest.mark.parametrize("sizes", [[1] * 700 + [300], [0, 5000, 0], [333, 0, 1, 2, 3, 4000, 661], [1000]])
def test_any_split_gives_the_offline_result_float64(rate, new_rate, sizes):
    x = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, state = _stream(x, rate, new_rate, sizes)
    whole = resample(x, rate, new_rate)
    assert out.shape == whole.shape == (-(-x.shape[0] * new_rate // rate),)
    torch.testing.assert_close(out, whole, atol=1e-12, rtol=0)
    assert state.received == x.shape[0]


def test_buffer_stays_bounded():
    state = init_resample_state(44100, 16000)
    M = state.ratio[0]
    longest = 0
    for _ in range(200):
        _, state = resample_chunk(torch.randn(441), state)
        longest = max(longest, state.buffer.shape[0])
    # the inputs of one block and its two flanks, plus what arrived since the last block
    assert longest <= 2 * state.half_width + 3 * M + 441


def test_state_is_a_value():
    state0 = init_resample_state(8000, 16000)
    piece = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    y1, state1 = resample_chunk(piece, state0)
    y2, state2 = resample_chunk(piece, state0)  # the old state is untouched
    assert torch.equal(y1, y2) and state0.received == 0 and state1.received == state2.received == 1000
    with pytest.raises(dataclasses.FrozenInstanceError):
        state1.received = 5


def test_flush_twice_and_empty_stream():
    y, _ = resample_flush(init_resample_state(8000, 16000))
    assert y.shape == (0,)
    state = init_resample_state(8000, 16000)
    x, state = resample_chunk(torch.randn(100), state)
    y, state = resample_flush(state)
    assert x.shape[0] + y.shape[0] == 200 and y.shape[0] > 0  # the filter's tail waits for the end
    y, _ = resample_flush(state)
    assert y.shape == (0,)


def test_filter_settings_are_those_of_resample():
    state = init_resample_state(8000, 16000)
    assert (state.zero_crossings, state.rolloff, state.beta) == (ZERO_CROSSINGS, ROLLOFF, BETA)
    assert isinstance(state, ResampleState) and state.ratio == (1, 2)
    # another filter streams to the same offline result with that filter
    x = torch.randn(3000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    state = init_resample_state(16000, 8000, zero_crossings=16, rolloff=0.8, beta=8.0)
    y, state = resample_chunk(x[:1234], state)
    z, state = resample_chunk(x[1234:], state)
    w, _ = resample_flush(state)
    torch.testing.assert_close(torch.cat([y, z, w]),
                               resample(x, 16000, 8000, zero_crossings=16, rolloff=0.8, beta=8.0),
                               atol=1e-12, rtol=0)


def test_streaming_errors():
    with pytest.raises(ValueError, match="orig_rate must be a positive integer"):
        init_resample_state(0, 16000)
    with pytest.raises(ValueError, match="rolloff must be in"):
        init_resample_state(8000, 16000, rolloff=1.5)
    state = init_resample_state(8000, 16000)
    with pytest.raises(ValueError, match=r"x: expected a 1-D float tensor \(n,\), found shape \(2, 3\)"):
        resample_chunk(torch.zeros(2, 3), state)
    with pytest.raises(ValueError, match="x: expected a 1-D float tensor .*dtype torch.int64"):
        resample_chunk(torch.zeros(3, dtype=torch.long), state)
