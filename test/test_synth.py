"""The eSpeak NG demo corpus: counts, 16 kHz audio, split by voice, determinism."""

import hashlib

import numpy as np
import pytest
import soundfile

pytest.importorskip("espeakng_loader")

from xtrans.bin import synth_corpus  # noqa: E402
from xtrans.data.kaldi_dir import read_data_dir  # noqa: E402
from xtrans.synth.corpus import COMMANDS, DIGITS, plan_corpus, split_variants  # noqa: E402
from xtrans.synth.espeak import EspeakError, Voice, get_engine, list_variants  # noqa: E402

WORDS = set(DIGITS) | {w for c in COMMANDS for w in c.split()}


def make(tmp_path, name, nj):
    out = tmp_path / name
    argv = ["--outdir", str(out), "--num_train", "6", "--num_dev", "3", "--num_test", "3", "--seed", "7",
            "--nj", str(nj), "--languages", "en-us,en-gb-x-rp"]
    assert synth_corpus.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("synth")
    return make(tmp, "a", nj=2), make(tmp, "b", nj=1)


def digests(root):
    data = {s: read_data_dir(root / s) for s in ("train", "dev", "test")}
    return {s: {u: hashlib.sha1(open(d.wav_scp[u], "rb").read()).hexdigest() for u in d.utt_ids}
            for s, d in data.items()}


def test_counts_audio_and_tables(corpora):
    root = corpora[0]
    for split, n in (("train", 6), ("dev", 3), ("test", 3)):
        data = read_data_dir(root / split)
        assert len(data) == n and set(data.text) == set(data.utt2spk) == set(data.utt2dur) == set(data.wav_scp)
        for utt in data.utt_ids:
            audio, rate = soundfile.read(data.wav_scp[utt], dtype="float32")
            assert rate == 16000 and audio.ndim == 1
            assert abs(len(audio) / 16000 - data.utt2dur[utt]) < 1e-3
            assert 0.2 < len(audio) / 16000 < 6.0
            assert np.sqrt(np.mean(audio ** 2)) > 1e-3  # not silent
            assert 0 < np.abs(audio).max() <= 1.0
            text = data.text[utt]
            assert text == text.upper() and set(text.split()) <= WORDS
            assert utt.startswith(data.utt2spk[utt] + "-")
        assert (root / split / "spk2utt").exists()


def test_split_by_voice(corpora):
    variants = {}
    for split in ("train", "dev", "test"):
        spk = set(read_data_dir(corpora[0] / split).utt2spk.values())
        variants[split] = {s.split("+", 1)[1] for s in spk}
    assert not variants["train"] & variants["dev"]
    assert not variants["train"] & variants["test"]
    assert not variants["dev"] & variants["test"]


def test_deterministic_for_any_number_of_jobs(corpora):
    assert digests(corpora[0]) == digests(corpora[1])


def test_plan_depends_on_seed():
    counts = {"train": 20, "dev": 2, "test": 2}
    assert plan_corpus(counts, 0) == plan_corpus(counts, 0)
    assert plan_corpus(counts, 0) != plan_corpus(counts, 1)


def test_split_variants_refuses_too_few():
    with pytest.raises(ValueError, match="leaves no training variant"):
        split_variants(["a", "b"], 0, 1, 1)


def test_unknown_voice_is_an_espeak_error():
    assert "f3" in list_variants()
    with pytest.raises(EspeakError, match="espeak_SetVoiceByName"):
        get_engine().synthesize("one", Voice("xx-nonexistent"))
