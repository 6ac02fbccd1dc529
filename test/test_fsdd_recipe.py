"""The FSDD recipe: connected-digit utterances from isolated recordings, split by take.

- on a small fake FSDD folder made here (three speakers, every digit, takes 0-6 and 45-47):
  the split by take, one speaker per utterance, lengths that add up to the parts and pauses,
  16 kHz files, the text, determinism, and the errors a user can hit;
- the recipe's confs load;
- on the tests' spoken digits (an FSDD-shaped folder with training takes only, like the
  developers' FSDD copy): run.sh stages 1-5 on a copy of egs/, which has no test set and so
  checks and formats dev in its place.
"""

import functools
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile

from xtrans.config import load_config
from xtrans.data.kaldi_dir import read_data_dir
from xtrans.data.resample import resample
from xtrans.recipes.fsdd import (DIGIT_WORDS, FsddError, download_fsdd, parse_takes, plan_split, prepare,
                                 render, scan_recordings, split_recordings)
from xtrans.testing import speech_fixtures
from xtrans.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SPEAKERS = ("alice", "bob", "carol")
TAKES = (0, 1, 2, 3, 4, 5, 6, 45, 46, 47)
NUM_UTTS = {"train": 12, "dev": 6, "test": 6}


def make_fake_fsdd(root: Path, takes=TAKES, seed: int = 0) -> Path:
    """``root/recordings/<digit>_<speaker>_<take>.wav``: 8 kHz Hann-windowed tones of 0.1-0.3 s."""
    rng = np.random.default_rng(seed)
    rec = root / "recordings"
    rec.mkdir(parents=True)
    for speaker in SPEAKERS:
        for digit in range(10):
            for take in takes:
                n = int(rng.integers(800, 2400))
                tone = np.sin(2 * np.pi * (300 + 100 * digit) * np.arange(n) / 8000) * np.hanning(n)
                soundfile.write(rec / f"{digit}_{speaker}_{take}.wav", 0.3 * tone, 8000, subtype="PCM_16")
    (rec / "notes.wav").write_bytes(b"")  # not <digit>_<speaker>_<take>.wav: skipped
    return root


@pytest.fixture(scope="module")
def fake_fsdd(tmp_path_factory):
    return make_fake_fsdd(tmp_path_factory.mktemp("fsdd"))


@pytest.fixture(scope="module")
def corpus(fake_fsdd, tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    summaries = prepare(fake_fsdd, out, NUM_UTTS, seed=3, dev_takes=range(45, 48))
    return out, summaries


def test_recordings_are_split_by_take(fake_fsdd):
    recordings = scan_recordings(fake_fsdd)
    assert len(recordings) == len(SPEAKERS) * 10 * len(TAKES)
    splits = split_recordings(recordings, dev_takes=parse_takes("45-47"))
    assert {r.take for r in splits["test"]} == {0, 1, 2, 3, 4}
    assert {r.take for r in splits["dev"]} == {45, 46, 47}
    assert {r.take for r in splits["train"]} == {5, 6}
    # a copy of the training split only (like ../shared/data/fsdd) has no test split
    assert "test" not in split_recordings([r for r in recordings if r.take >= 5])


def test_every_utterance_joins_2_to_6_takes_of_one_speaker_from_its_split(fake_fsdd):
    splits = split_recordings(scan_recordings(fake_fsdd), dev_takes=range(45, 48))
    takes_of = {"train": {5, 6}, "dev": {45, 46, 47}, "test": {0, 1, 2, 3, 4}}
    for split, recordings in splits.items():
        plans = plan_split(split, recordings, 50, seed=1)
        assert len(plans) == 50 and len({p.utt_id for p in plans}) == 50
        assert {len(p.parts) for p in plans} == {2, 3, 4, 5, 6}
        for p in plans:
            assert p.utt_id.startswith(f"{p.speaker}-{split}-")
            assert {r.speaker for r in p.parts} == {p.speaker}
            assert {r.take for r in p.parts} <= takes_of[split]
            assert len(p.pauses_s) == len(p.parts) + 1
            assert all(0.1 <= s <= 0.4 for s in p.pauses_s[1:-1])
            assert p.text == " ".join(DIGIT_WORDS[r.digit] for r in p.parts)


def test_prepare_writes_16khz_digit_strings_that_add_up_to_their_parts(fake_fsdd, corpus):
    out, summaries = corpus
    assert set(summaries) == {"train", "dev", "test"}
    splits = split_recordings(scan_recordings(fake_fsdd), dev_takes=range(45, 48))
    for split, n in NUM_UTTS.items():
        data = read_data_dir(out / split)
        assert len(data) == n and summaries[split].utterances == n
        plans = {p.utt_id: p for p in plan_split(split, splits[split], n, seed=3)}
        assert set(data.utt_ids) == set(plans)
        for utt in data.utt_ids:
            plan = plans[utt]
            info = soundfile.info(data.wav_scp[utt])
            assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
            # 8 kHz parts + pauses, doubled by the resampling to 16 kHz
            samples_8k = sum(soundfile.info(str(r.path)).frames for r in plan.parts)
            samples_8k += sum(int(round(s * 8000)) for s in plan.pauses_s)
            assert info.frames == data.utt2num_samples[utt] == 2 * samples_8k
            assert abs(data.utt2dur[utt] - info.frames / 16000) < 1e-4
            words = data.text[utt].split()
            assert 2 <= len(words) <= 6 and set(words) <= set(DIGIT_WORDS)
            assert data.text[utt] == plan.text
            assert data.utt2spk[utt] == plan.speaker and utt.startswith(plan.speaker + "-")
    assert "CC BY-SA 4.0" in (out / "wavs" / "ATTRIBUTION.txt").read_text()


def test_rendered_audio_is_the_peak_scaled_parts_with_pauses(fake_fsdd):
    recordings = split_recordings(scan_recordings(fake_fsdd))["train"]
    plan = plan_split("train", recordings, 1, seed=5)[0]
    audio = render(plan, noise_level=0.0, part_peak=0.5)  # (S,) at 16 kHz
    expected, pos = np.zeros(len(audio) // 2, dtype=np.float32), 0
    for k, pause in enumerate(plan.pauses_s):
        pos += int(round(pause * 8000))
        if k < len(plan.parts):
            part, _ = soundfile.read(str(plan.parts[k].path), dtype="float32")
            expected[pos:pos + len(part)] = 0.5 * part / np.abs(part).max()
            pos += len(part)
    assert pos == len(expected)
    back = resample(audio, 16000, 8000).numpy()  # the tones lie far below 4 kHz: 8 -> 16 -> 8 kHz keeps them
    np.testing.assert_allclose(back, expected, atol=2e-3)


def test_corpus_depends_only_on_the_options_and_seed(fake_fsdd, corpus, tmp_path):
    out, _ = corpus
    prepare(fake_fsdd, tmp_path / "a", {"train": 20, "dev": 6}, seed=3, dev_takes=range(45, 48))
    prepare(fake_fsdd, tmp_path / "b", {"train": 12, "dev": 6}, seed=4, dev_takes=range(45, 48))
    # a larger training set leaves dev as it was
    assert (tmp_path / "a" / "dev" / "text").read_text() == (out / "dev" / "text").read_text()
    first = sorted((tmp_path / "a" / "wavs" / "dev").glob("*.wav"))
    assert [p.read_bytes() for p in first] == [(out / "wavs" / "dev" / p.name).read_bytes() for p in first]
    # the training set's first utterances are drawn alike; another seed draws another corpus
    assert read_data_dir(tmp_path / "a" / "train").text.items() >= read_data_dir(out / "train").text.items()
    assert (tmp_path / "b" / "train" / "text").read_text() != (out / "train" / "text").read_text()


def test_a_folder_without_test_takes_gives_no_test_set(tmp_path):
    fsdd = make_fake_fsdd(tmp_path / "fsdd", takes=(5, 6, 45, 46))
    out = tmp_path / "data"
    (out / "test").mkdir(parents=True)
    (out / "test" / "wav.scp").write_text("stale x.wav\n")  # from an earlier corpus
    summaries = prepare(fsdd / "recordings", out, NUM_UTTS, dev_takes=[45, 46])
    assert set(summaries) == {"train", "dev"}
    assert not (out / "test").exists()
    assert (out / "train" / "wav.scp").exists() and (out / "dev" / "wav.scp").exists()


def test_user_errors_name_what_to_change(fake_fsdd, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FsddError, match="no <digit>_<speaker>_<take>.wav recordings"):
        prepare(tmp_path / "empty", tmp_path / "out", NUM_UTTS)
    with pytest.raises(ValueError, match="takes: expected numbers and ranges"):
        parse_takes("45..49")
    with pytest.raises(ValueError, match="ends before it starts"):
        parse_takes("49-45")
    with pytest.raises(ValueError, match=r"dev_takes: takes \[3, 4\] are also test takes"):
        split_recordings(scan_recordings(fake_fsdd), dev_takes=[3, 4, 5])
    with pytest.raises(ValueError, match="unknown split 'eval'"):
        prepare(fake_fsdd, tmp_path / "out", {"eval": 3})
    with pytest.raises(ValueError, match="min_digits/max_digits"):
        plan_split("train", scan_recordings(fake_fsdd), 3, seed=0, min_digits=4, max_digits=2)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_extracts_the_release_layout(tmp_path):
    # the GitHub archive holds free-spoken-digit-dataset-<version>/recordings/*.wav
    tree = make_fake_fsdd(tmp_path / "tree" / "free-spoken-digit-dataset-1.0.10", takes=(0, 5))
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "v1.0.10.tar.gz", "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1.0.10.tar.gz"
        rec = download_fsdd(tmp_path / "downloads", url=url, progress=False)
        assert rec == tmp_path / "downloads" / "free-spoken-digit-dataset-1.0.10" / "recordings"
        assert len(scan_recordings(tmp_path / "downloads")) == len(SPEAKERS) * 10 * 2
        (served / "v1.0.10.tar.gz").unlink()  # a second call finds the extracted tree, downloads nothing
        assert download_fsdd(tmp_path / "downloads", url=url, progress=False) == rec
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ValueError, match="expected a .tar.gz archive"):
        download_fsdd(tmp_path / "x", url="https://example.org/fsdd.zip")


@pytest.mark.parametrize("stage", ["1", "2a", "2b", "2c", "2d", "3a", "3b", "3c", "4", "5a", "5b"])
def test_recipe_confs_load_with_the_mini_preset(stage):
    cfg = load_config(REPO / "egs" / "fsdd" / "asr1" / "conf" / f"train_stage{stage}.yaml", TrainConfig)
    assert cfg.model.encoder.preset == "mini"
    enc = cfg.model.encoder
    assert (enc.pos_conv, enc.extractor_mode, enc.freeze_feature_extractor) == ("causal", "batch_norm", True)


def _run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(["bash", "run.sh", *args], cwd=recipe, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_recipe_stages_1_to_5_on_a_copy_without_test_takes(spoken_digits, tmp_path):
    fsdd = spoken_digits
    egs = tmp_path / "egs"
    shutil.copytree(REPO / "egs", egs, symlinks=True,
                    ignore=shutil.ignore_patterns("data", "dump*", "exp", "downloads", "RESULTS.md"))
    recipe = egs / "fsdd" / "asr1"
    # stage 1 alone, the folder given (a copy of egs/ is not beside ../shared)
    _run(recipe, "--stage", "1", "--stop_stage", "1", "--test_sets", "dev",
         "--local_data_opts", f"--fsdd_dir {fsdd} --num_train 40 --num_dev 8 --num_test 8")
    for split, n in [("train", 40), ("dev", 8)]:
        data = read_data_dir(recipe / "data" / split)
        assert len(data) == n
        assert set(data.utt2spk.values()) <= set(speech_fixtures.SPEAKERS)
        assert all(soundfile.info(p).samplerate == 16000 for p in data.wav_scp.values())
        assert all(2 <= len(t.split()) <= 6 for t in data.text.values())
    assert not (recipe / "data" / "test").exists()  # the folder has no test takes 0-4
    # stages 2-5: run.sh sees data/ without data/test and checks and formats dev in its place
    (recipe / "conf" / "pretrain_test.yaml").write_text(  # stage 4's front-end fit, 3 updates
        (recipe / "conf" / "pretrain_frontend.yaml").read_text().replace("max_updates: 600", "max_updates: 3")
        .replace("stats_batches: 20", "stats_batches: 2"))
    proc = _run(recipe, "--stage", "2", "--stop_stage", "5", "--nj", "1", "--frontend_config", "conf/pretrain_test.yaml")
    assert "stage 5:" in proc.stdout
    assert "CNN fitted to 40 log-mel filters in 3 updates" in proc.stdout
    for name in ["train", "dev", "train_clean", "dev_clean"]:
        assert (recipe / "dump" / name / "wav.scp").exists(), name
    assert not (recipe / "dump" / "test").exists()
    assert "<blk> 0" in (recipe / "data" / "lang_bpe" / "tokens.txt").read_text()
    assert (recipe / "exp" / "pretrained" / "encoder.pt").exists()
