"""The frame geometry of xtrans.frames against the CNN it describes and its own identities."""

import numpy as np
import pytest
import torch

from xtrans import frames, masks
from xtrans.frames import (
    FRAME_MS,
    FRAME_STRIDE,
    RECEPTIVE_FIELD,
    SAMPLE_RATE,
    frames_to_ms,
    frames_to_seconds,
    ms_to_frames,
    num_frames,
    samples_for_chunk,
)


def test_constants_agree():
    assert (SAMPLE_RATE, FRAME_STRIDE, RECEPTIVE_FIELD, FRAME_MS) == (16000, 320, 400, 20)
    assert FRAME_STRIDE * 1000 == FRAME_MS * SAMPLE_RATE


def _conv_frames(samples: int) -> int:
    """Output length of the XLSR CNN's seven convolutions (kernel, stride), computed layer by layer."""
    length = samples
    for kernel, stride in [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2:
        length = max(0, (length - kernel) // stride + 1)
    return length


@pytest.mark.parametrize("samples", [0, 1, 79, 80, 399, 400, 401, 719, 720, 721, 16000, 16079, 16080, 48321])
def test_num_frames_matches_xlsr_convolutions(samples):
    assert num_frames(samples) == _conv_frames(samples)


def test_num_frames_every_length_up_to_two_seconds():
    for samples in range(0, 32000, 7):
        assert num_frames(samples) == _conv_frames(samples)


def test_frame_k_reads_samples_320k_to_320k_plus_400():
    # The last frame of a waveform of S samples ends at or before S; one more sample past a
    # frame's end adds that frame exactly when it completes.
    for k in range(20):
        end = FRAME_STRIDE * k + RECEPTIVE_FIELD
        assert num_frames(end) == k + 1
        assert num_frames(end - 1) == k


def test_num_frames_tensor_matches_int():
    lengths = torch.tensor([0, 5, 399, 400, 719, 720, 16000, 123457])
    out = num_frames(lengths)
    assert out.dtype == torch.int64 and out.shape == lengths.shape
    assert out.tolist() == [num_frames(int(s)) for s in lengths]
    assert num_frames(torch.tensor(720, dtype=torch.int32)).item() == 2


def test_num_frames_numpy_integer():
    assert num_frames(np.int64(720)) == 2 and isinstance(num_frames(np.int64(720)), int)


@pytest.mark.parametrize("bad, found", [(400.0, "float"), ("400", "str"), (True, "bool")])
def test_num_frames_rejects_non_integers(bad, found):
    with pytest.raises(TypeError, match=f"samples: expected an int or an integer tensor, found {found}"):
        num_frames(bad)


def test_num_frames_rejects_float_tensor():
    with pytest.raises(TypeError, match="samples: expected an integer tensor, found dtype torch.float32"):
        num_frames(torch.tensor([400.0]))


@pytest.mark.parametrize("chunk_size", [1, 2, 16, 32])
def test_samples_for_chunk_is_exactly_enough(chunk_size):
    for c in range(6):
        need = samples_for_chunk(c, chunk_size)
        assert need == 320 * (c + 1) * chunk_size + 80
        assert num_frames(need) == (c + 1) * chunk_size
        assert num_frames(need - 1) == (c + 1) * chunk_size - 1


def test_samples_for_chunk_rejects_bad_arguments():
    with pytest.raises(ValueError, match="chunk_index: expected >= 0, found -1"):
        samples_for_chunk(-1, 16)
    with pytest.raises(ValueError, match="chunk_size: expected >= 1 frame, found 0"):
        samples_for_chunk(0, 0)


def test_ms_frames_round_trip():
    for n in [0, 1, 16, 32, 64, 128]:
        assert ms_to_frames(frames_to_ms(n)) == n
    assert ms_to_frames(None) is None and frames_to_ms(None) is None
    assert ms_to_frames(640.0) == 32 and isinstance(ms_to_frames(640.0), int)
    assert frames_to_seconds(50) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [650, -20, 10.5])
def test_ms_to_frames_rejects_non_multiples(bad):
    with pytest.raises(ValueError, match="ms: expected a non-negative multiple of 20 ms"):
        ms_to_frames(bad)


def test_masks_reexports_the_same_objects():
    assert masks.ms_to_frames is frames.ms_to_frames
    assert masks.frames_to_ms is frames.frames_to_ms
    assert masks.FRAME_MS == frames.FRAME_MS
