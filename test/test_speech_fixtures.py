"""The tests' own speech: an FSDD-shaped folder of eSpeak NG digits, readable as FSDD and as a Kaldi
data directory, 8 kHz, the same bytes on every run."""

import numpy as np
import pytest
import soundfile

pytest.importorskip("espeakng_loader")

from xtrans.data.kaldi_dir import read_data_dir  # noqa: E402
from xtrans.recipes.fsdd import DIGIT_WORDS, scan_recordings, split_recordings  # noqa: E402
from xtrans.testing.speech_fixtures import RATE, SPEAKERS, TAKES, write_spoken_digits  # noqa: E402


def test_every_speaker_says_every_digit_in_every_take(spoken_digits):
    recordings = scan_recordings(spoken_digits)
    assert sorted((r.speaker, r.digit, r.take) for r in recordings) == sorted(
        (s, d, t) for s in SPEAKERS for d in range(10) for t in TAKES)
    splits = split_recordings(recordings)
    assert sorted(splits) == ["dev", "train"]  # no test takes 0-4, like the developers' FSDD copy
    assert {r.take for r in splits["dev"]} == {45}


def test_the_folder_is_a_kaldi_data_dir_of_its_recordings(spoken_digits):
    data = read_data_dir(spoken_digits)
    assert len(data) == len(SPEAKERS) * 10 * len(TAKES)
    for utt in data.utt_ids:
        digit, speaker, take = data.wav_scp[utt].rsplit("/", 1)[1][:-len(".wav")].split("_")
        assert utt == f"{speaker}-{digit}_{int(take):02d}" and data.utt2spk[utt] == speaker
        assert data.text[utt] == DIGIT_WORDS[int(digit)]
        info = soundfile.info(data.wav_scp[utt])
        assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
        assert data.utt2dur[utt] == pytest.approx(info.frames / RATE, abs=1e-4)
        assert 0.2 < data.utt2dur[utt] < 1.0


def test_recordings_are_words_between_quiet_margins(spoken_digits):
    for path in sorted((spoken_digits / "recordings").glob("*_5.wav")):
        x, _ = soundfile.read(path, dtype="float64")
        rms = np.sqrt(np.mean(x ** 2))
        assert 0.3 - 1e-3 <= np.abs(x).max() <= 0.9 + 1e-3
        edge = int(0.01 * RATE)  # the first and last 10 ms are margin: noise 30-45 dB below the word
        for margin in (x[:edge], x[-edge:]):
            assert np.sqrt(np.mean(margin ** 2)) < 0.1 * rms, path.name


def test_the_same_bytes_whatever_this_process_synthesised_before(spoken_digits, tmp_path):
    from xtrans.synth.espeak import Voice, get_engine

    get_engine().synthesize("seven eight nine", Voice("en-us", "f3"), seed=5)  # state eSpeak carries over
    again = write_spoken_digits(tmp_path / "again")
    names = sorted(p.relative_to(spoken_digits) for p in spoken_digits.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in names:
        assert (again / name).read_bytes() == (spoken_digits / name).read_bytes(), name
    other = write_spoken_digits(tmp_path / "other", seed=1)
    assert (other / "wav.scp").read_text() == (again / "wav.scp").read_text()
    name = f"recordings/0_{next(iter(SPEAKERS))}_5.wav"
    assert (other / name).read_bytes() != (again / name).read_bytes()  # the seed changes the audio
