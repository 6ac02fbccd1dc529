"""A Kaldi data directory seeded with one problem per utterance, for validator and pipeline tests."""

from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np
import soundfile

from xtrans.frames import SAMPLE_RATE as RATE


def speech(seconds, rate=RATE, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    x = 0.1 * rng.standard_normal((round(seconds * rate), channels))
    return x[:, 0] if channels == 1 else x


def make_messy_data_dir(tmp_path: Path, num_good: int = 0) -> Path:
    """A data dir with one problem per utterance, two good ones and ``num_good`` more good ones.

    Problems: unsorted wav.scp, an empty file, a truncated WAV, an 8 kHz stereo file, an all-zero
    file, a transcript too long for its audio, an utterance without text, a NaN-filled ark
    entry, a text line whose id has no audio (``ghost``) and an empty transcript (``good3``).
    """
    audio = tmp_path / "audio"
    audio.mkdir()
    soundfile.write(audio / "good1.wav", speech(1.0), RATE, subtype="PCM_16")
    soundfile.write(audio / "good2.flac", speech(0.5, seed=1), RATE)
    (audio / "empty.wav").write_bytes(b"")
    soundfile.write(audio / "full.wav", speech(1.0, seed=2), RATE, subtype="PCM_16")
    (audio / "trunc.wav").write_bytes((audio / "full.wav").read_bytes()[:2000])
    soundfile.write(audio / "stereo8k.wav", speech(1.0, rate=8000, channels=2), 8000)
    soundfile.write(audio / "zeros.wav", np.zeros(RATE), RATE, subtype="PCM_16")
    soundfile.write(audio / "short.wav", speech(0.1, seed=3), RATE, subtype="PCM_16")
    soundfile.write(audio / "notext.wav", speech(0.5, seed=4), RATE, subtype="PCM_16")
    kaldiio.save_ark(
        str(audio / "nan.ark"), {"nan": np.full(RATE, np.nan, dtype=np.float32)},
        scp=str(audio / "nan.scp"),
    )
    nan_entry = (audio / "nan.scp").read_text().split()[1]
    d = tmp_path / "data"
    d.mkdir()
    wav_scp = {
        "good1": audio / "good1.wav",
        "good2": audio / "good2.flac",
        "empty": audio / "empty.wav",
        "trunc": audio / "trunc.wav",
        "stereo8k": audio / "stereo8k.wav",
        "zeros": audio / "zeros.wav",
        "short": audio / "short.wav",
        "notext": audio / "notext.wav",
        "nan": nan_entry,
    }
    words = ["ONE", "TWO", "THREE", "FOUR", "FIVE"]
    extra_text = {}
    for i in range(num_good):
        name = f"more{i:03d}"
        soundfile.write(audio / f"{name}.wav", speech(0.6 + 0.1 * (i % 5), seed=10 + i), RATE, subtype="PCM_16")
        wav_scp[name] = audio / f"{name}.wav"
        extra_text[name] = " ".join(words[(i + j) % 5] for j in range(1 + i % 3))
    lines = [f"{k} {v}\n" for k, v in sorted(wav_scp.items())]
    lines[0], lines[1] = lines[1], lines[0]  # unsorted
    (d / "wav.scp").write_text("".join(lines))
    text = {
        "good1": "HELLO WORLD",
        "good2": "HI",
        "empty": "X",
        "trunc": "X",
        "stereo8k": "X",
        "zeros": "X",
        "short": "A LONG SENTENCE FOR A TENTH OF A SECOND",  # 0.1 s = 4 frames
        "nan": "X",
        "ghost": "NO AUDIO FOR THIS ONE",  # missing-id line
        "good3": "",
        **extra_text,
    }
    (d / "text").write_text("".join(f"{k} {v}\n" for k, v in sorted(text.items())))
    (d / "utt2spk").write_text("".join(f"{k} spk\n" for k in sorted(wav_scp)))
    return d
