"""Audio loading (files, ark, pipes, segments) and the polyphase resampler."""

import math
import shlex
import sys

import kaldiio
import numpy as np
import pytest
import soundfile
import torch

from xtrans.data import audio as audio_module
from xtrans.data.audio import RAW_HINT, BadAudioError, RawFormat, load_waveform, read_audio
from xtrans.data.kaldi_dir import Segment
from xtrans.data.resample import resample


def _sine(freq, rate, seconds, amplitude=0.5, phase=0.0):
    t = np.arange(round(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t + phase)


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_upsample_8k_to_16k_sine_matches_analytic(freq):
    x = _sine(freq, 8000, 1.0, amplitude=0.8)
    y = resample(torch.tensor(x), 8000, 16000).numpy()
    assert y.shape == (16000,)
    reference = _sine(freq, 16000, 1.0, amplitude=0.8)
    interior = slice(1600, -1600)  # away from the zero-padded ends
    assert np.abs(y[interior] - reference[interior]).max() < 1e-5
    # frequency and amplitude from the spectrum of the interior
    seg = y[interior] * np.hanning(len(y[interior]))
    spectrum = np.abs(np.fft.rfft(seg, n=1 << 18))
    peak_hz = np.argmax(spectrum) * 16000 / (1 << 18)
    assert peak_hz == pytest.approx(freq, abs=0.2)
    rms = np.sqrt(np.mean(y[interior] ** 2))
    assert rms == pytest.approx(0.8 / math.sqrt(2), rel=1e-4)


def test_downsample_removes_content_above_new_nyquist():
    x = _sine(1000, 16000, 1.0) + _sine(6000, 16000, 1.0)  # 6 kHz cannot exist at 8 kHz
    y = resample(torch.tensor(x), 16000, 8000).numpy()
    reference = _sine(1000, 8000, 1.0)
    assert np.abs(y[800:-800] - reference[800:-800]).max() < 1e-5


def test_resample_odd_ratio_and_batch_shape():
    x = torch.tensor(np.stack([_sine(500, 44100, 0.5), _sine(700, 44100, 0.5)]))
    y = resample(x, 44100, 16000)
    assert y.shape == (2, math.ceil(x.shape[-1] * 16000 / 44100)) and y.dtype == torch.float64
    reference = _sine(700, 16000, y.shape[-1] / 16000)
    assert np.abs(y[1, 800:-800].numpy() - reference[800:-800]).max() < 1e-5


def test_resample_rejects_bad_arguments():
    with pytest.raises(ValueError, match="orig_rate must be a positive integer"):
        resample(torch.zeros(10), 0, 16000)
    with pytest.raises(ValueError, match=r"rolloff must be in \(0, 1\]"):
        resample(torch.zeros(10), 8000, 16000, rolloff=1.5)
    with pytest.raises(ValueError, match="waveform must be floating point"):
        resample(torch.zeros(10, dtype=torch.int16), 8000, 16000)
    with pytest.raises(ValueError, match="round the sample rates"):
        resample(torch.zeros(10), 16001, 16000)


def test_read_wav_flac_stereo_and_downmix(tmp_path):
    left, right = _sine(300, 8000, 0.5), _sine(300, 8000, 0.5, phase=np.pi / 3)
    soundfile.write(tmp_path / "s.flac", np.stack([left, right], axis=1), 8000, subtype="PCM_16")
    samples, rate = read_audio(str(tmp_path / "s.flac"))
    assert rate == 8000 and samples.shape == (4000, 2) and samples.dtype == np.float32
    wave = load_waveform(str(tmp_path / "s.flac"), sample_rate=16000)
    expected = resample(torch.tensor((left + right) / 2), 8000, 16000).float()
    assert wave.shape == (8000,) and torch.allclose(wave, expected, atol=1e-3)


def test_read_segment_of_file_and_pipe(tmp_path):
    x = np.arange(16000, dtype=np.int16)
    soundfile.write(tmp_path / "r.wav", x, 16000, subtype="PCM_16")
    segment = Segment("r", 0.25, 0.5)
    samples, _ = read_audio(str(tmp_path / "r.wav"), segment=segment)
    assert samples[:, 0].tolist() == (x[4000:8000] / 32768).astype(np.float32).tolist()
    piped, rate = read_audio(f"cat {tmp_path / 'r.wav'} |", segment=segment)
    assert rate == 16000 and np.array_equal(piped, samples)
    tail, _ = read_audio(str(tmp_path / "r.wav"), segment=Segment("r", 0.75, None))
    assert len(tail) == 4000


def test_read_ark_wav_and_float_vector(tmp_path):
    pcm = (np.arange(800) - 400).astype(np.int16)
    floats = np.linspace(-1, 1, 320).astype(np.float32)
    kaldiio.save_ark(str(tmp_path / "a.ark"), {"w": (8000, pcm)}, scp=str(tmp_path / "a.scp"))
    kaldiio.save_ark(str(tmp_path / "b.ark"), {"f": floats}, scp=str(tmp_path / "b.scp"))
    entry_w = (tmp_path / "a.scp").read_text().split()[1]
    entry_f = (tmp_path / "b.scp").read_text().split()[1]
    samples, rate = read_audio(entry_w)
    assert rate == 8000 and np.array_equal(samples[:, 0], pcm / np.float32(32768))
    samples, rate = read_audio(entry_f)
    assert rate == 16000 and np.array_equal(samples[:, 0], floats)  # bare vectors: 16 kHz


def test_bad_audio_errors_carry_utt_path_reason(tmp_path):
    with pytest.raises(BadAudioError, match="'u1'.*file does not exist") as info:
        read_audio(str(tmp_path / "missing.wav"), utt_id="u1")
    assert info.value.utt_id == "u1" and info.value.path.endswith("missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(BadAudioError, match="unreadable"):
        read_audio(str(tmp_path / "empty.wav"), utt_id="u2")
    soundfile.write(tmp_path / "t.wav", np.zeros(8000), 8000, subtype="PCM_16")
    (tmp_path / "trunc.wav").write_bytes((tmp_path / "t.wav").read_bytes()[:1000])
    with pytest.raises(BadAudioError, match="truncated WAV: header declares 16000 bytes"):
        read_audio(str(tmp_path / "trunc.wav"), utt_id="u3")
    with pytest.raises(BadAudioError, match="command exited with status 3"):
        read_audio("exit 3 |", utt_id="u4")
    with pytest.raises(BadAudioError, match="is not audio"):
        read_audio("echo hello |", utt_id="u5")
    with pytest.raises(BadAudioError, match="ark file does not exist"):
        read_audio(str(tmp_path / "none.ark:12"), utt_id="u6")
    with pytest.raises(BadAudioError, match="after the end of the recording"):
        read_audio(str(tmp_path / "t.wav"), utt_id="u7", segment=Segment("t", 5.0, 6.0))
    with pytest.raises(BadAudioError, match="empty wav.scp entry"):
        read_audio("", utt_id="u8")



def _raw_s16le(path, samples):
    path.write_bytes(np.asarray(samples, dtype="<i2").tobytes())


def test_raw_pcm_refused_with_hint_unless_its_format_is_given(tmp_path):
    x = (np.arange(-4000, 4000, 2)).astype(np.int16)  # 4000 samples
    _raw_s16le(tmp_path / "call.raw", x)
    with pytest.raises(BadAudioError, match="headerless raw PCM.*--raw-sample-rate 8000 --raw-format s16le") \
            as info:
        read_audio(str(tmp_path / "call.raw"), utt_id="c1")
    assert (info.value.utt_id, info.value.reason) == ("c1", RAW_HINT)
    with pytest.raises(BadAudioError, match="file does not exist"):
        read_audio(str(tmp_path / "nope.pcm"), raw=RawFormat(8000, "s16le"))

    samples, rate = read_audio(str(tmp_path / "call.raw"), raw=RawFormat(8000, "s16le"))
    assert rate == 8000 and samples.shape == (4000, 1)
    assert np.array_equal(samples[:, 0], x / np.float32(32768))
    part, _ = read_audio(str(tmp_path / "call.raw"), raw=RawFormat(8000, "s16le"), segment=Segment("c", 0.1, 0.2))
    assert np.array_equal(part, samples[800:1600])
    stereo, _ = read_audio(str(tmp_path / "call.raw"), raw=RawFormat(8000, "s16le", channels=2))
    assert np.array_equal(stereo, samples.reshape(2000, 2))
    wave = load_waveform(str(tmp_path / "call.raw"), raw=RawFormat(16000, "s16le"))
    assert torch.equal(wave, torch.from_numpy(samples[:, 0]))

    (tmp_path / "odd.pcm").write_bytes(b"\x00" * 7)
    with pytest.raises(BadAudioError, match="7 bytes is not a whole number of s16le frames"):
        read_audio(str(tmp_path / "odd.pcm"), raw=RawFormat(8000, "s16le"))
    header_file = tmp_path / "h.wav"  # files with a header ignore the raw format
    soundfile.write(header_file, np.zeros(100), 11025)
    assert read_audio(str(header_file), raw=RawFormat(8000, "mulaw"))[1] == 11025


def test_raw_pcm_through_a_wav_scp_pipe(tmp_path):
    """The Kaldi route: a command converts the raw file to WAV on stdout (sox in real life)."""
    x = (1000 * np.sin(np.arange(3200) / 7)).astype(np.int16)
    _raw_s16le(tmp_path / "call.raw", x)
    to_wav = ("import io, sys, numpy, soundfile; x = numpy.fromfile(sys.argv[1], '<i2'); b = io.BytesIO(); "
              "soundfile.write(b, x, 8000, format='WAV', subtype='PCM_16'); sys.stdout.buffer.write(b.getvalue())")
    entry = f"{shlex.quote(sys.executable)} -c {shlex.quote(to_wav)} {tmp_path / 'call.raw'} |"
    samples, rate = read_audio(entry)
    assert rate == 8000 and np.array_equal(samples[:, 0], x / np.float32(32768))
    with pytest.raises(BadAudioError, match="is not audio"):  # raw bytes on stdout say nothing
        read_audio(f"cat {tmp_path / 'call.raw'} |")


def test_raw_format_checks_its_arguments():
    with pytest.raises(ValueError, match="sample_rate: expected a positive integer .Hz., found 0"):
        RawFormat(0)
    with pytest.raises(ValueError, match="sample_format: expected one of s16le, .*found 'pcm16'"):
        RawFormat(8000, "pcm16")
    with pytest.raises(ValueError, match="channels: expected a positive integer, found 0"):
        RawFormat(8000, "s16le", channels=0)


@pytest.mark.parametrize("error, reason", [
    (TypeError("samplerate must be specified"), "unreadable: TypeError: samplerate must be specified"),
    (ZeroDivisionError("boom"), "unreadable: ZeroDivisionError: boom"),
    (PermissionError(13, "Permission denied"), "permission denied"),
])
def test_any_backend_failure_becomes_bad_audio(tmp_path, monkeypatch, error, reason):
    soundfile.write(tmp_path / "ok.wav", np.zeros(100), 8000)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(audio_module.soundfile, "SoundFile", fail)
    with pytest.raises(BadAudioError, match=f"'u' .*: {reason}$") as info:
        read_audio(str(tmp_path / "ok.wav"), utt_id="u")
    assert (info.value.path, info.value.reason) == (str(tmp_path / "ok.wav"), reason)


def test_a_directory_is_bad_audio(tmp_path):
    with pytest.raises(BadAudioError, match="is a directory, not an audio file"):
        read_audio(str(tmp_path))


def test_as_samples_scales_pcm_like_soundfile(tmp_path):
    from xtrans.data.audio import as_samples

    pcm = np.array([[-32768, 0], [16384, 32767], [1, -1]], dtype=np.int16)  # (S, C)
    path = tmp_path / "pcm.wav"
    soundfile.write(path, pcm, 16000, subtype="PCM_16")
    read, _ = soundfile.read(path, dtype="float32", always_2d=True)
    x = as_samples(pcm)
    assert x.dtype == torch.float32 and x.shape == (3, 2)
    assert torch.equal(x, torch.from_numpy(read))
    u8 = as_samples(np.array([0, 128, 255], dtype=np.uint8))  # 8-bit PCM is unsigned
    assert u8.shape == (3, 1) and u8[:, 0].tolist() == [-1.0, 0.0, 127 / 128]
    t = torch.tensor([0.5, -0.25], dtype=torch.float64)
    assert as_samples(t).dtype == torch.float32 and as_samples(t)[:, 0].tolist() == [0.5, -0.25]


def test_as_samples_errors():
    from xtrans.data.audio import as_samples

    with pytest.raises(TypeError, match="samples: expected a float tensor, found dtype torch.int16"):
        as_samples(torch.zeros(4, dtype=torch.int16), "samples")
    with pytest.raises(TypeError, match="audio: expected a numpy array or torch tensor, found list"):
        as_samples([0.0, 1.0])
    with pytest.raises(ValueError, match=r"audio: expected \(S,\) or channels-last \(S, C\) samples, found shape \(2, 2, 3\)"):
        as_samples(np.zeros((2, 2, 3), np.float32))
