"""Tiny synthetic corpora, tokenizers and configs for training tests (CPU, seconds).

    corpus = make_tiny_corpus(tmp_path)                   # data/train, data/dev, data/lang/bpe.model
    cfg = tiny_train_config(corpus, training={"max_updates": 4})
    write_yaml(cfg, tmp_path / "conf.yaml")

Audio is a sum of tones, one frequency per word, plus a little noise, so the task is learnable
but nothing here pretends to be speech.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import numpy as np
import soundfile
import yaml

from xtrans.frames import SAMPLE_RATE

WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero")


@dataclass(frozen=True)
class TinyCorpus:
    """Paths of a tiny corpus made by :func:`make_tiny_corpus`."""

    root: Path
    train_dir: Path
    dev_dir: Path
    tokenizer: Path
    vocab_size: int


def _write_split(root: Path, name: str, num_utts: int, rng: np.random.Generator,
                 nan_utts: Iterable[str] = ()) -> Dict[str, str]:
    d = root / name
    wav_dir = root / "wav" / name
    d.mkdir(parents=True, exist_ok=True)
    wav_dir.mkdir(parents=True, exist_ok=True)
    nan_utts = set(nan_utts)
    scp, text, n_samples = [], [], []
    texts = {}
    for i in range(num_utts):
        utt = f"{name}_{i:03d}"
        words = [WORDS[k] for k in rng.integers(0, len(WORDS), size=int(rng.integers(1, 4)))]
        seg = int(rng.integers(2400, 4000))  # samples per word
        t = np.arange(seg) / SAMPLE_RATE
        wave = np.concatenate([0.3 * np.sin(2 * np.pi * (200 + 90 * WORDS.index(w)) * t) for w in words])
        wave = (wave + 0.01 * rng.standard_normal(len(wave))).astype(np.float32)
        if utt in nan_utts:
            wave[len(wave) // 2] = np.nan
        path = wav_dir / f"{utt}.wav"
        soundfile.write(path, wave, SAMPLE_RATE, subtype="FLOAT")
        scp.append(f"{utt} {path}\n")
        text.append(f"{utt} {' '.join(words)}\n")
        n_samples.append(f"{utt} {len(wave)}\n")
        texts[utt] = " ".join(words)
    (d / "wav.scp").write_text("".join(scp))
    (d / "text").write_text("".join(text))
    (d / "utt2num_samples").write_text("".join(n_samples))
    return texts


def make_tiny_corpus(root: str | Path, *, num_train: int = 24, num_dev: int = 6, vocab_size: int = 20,
                     seed: int = 0, nan_utts: Iterable[str] = ()) -> TinyCorpus:
    """Writes ``root/{train,dev}`` Kaldi dirs (float WAV, ``utt2num_samples``) and a BPE tokenizer.

    Args:
        root: output folder.
        num_train, num_dev: utterances (0.15-0.75 s each).
        vocab_size: ``V`` of the tokenizer, blank included.
        seed: everything is a function of it.
        nan_utts: utterance ids (e.g. ``"train_003"``) whose waveform gets a NaN sample.
    """
    from xtrans.tokenizer import train_tokenizer

    root = Path(root)
    rng = np.random.default_rng(seed)
    train_texts = _write_split(root, "train", num_train, rng, nan_utts)
    _write_split(root, "dev", num_dev, rng, nan_utts)
    tok = train_tokenizer([" ".join(WORDS)] * 4 + list(train_texts.values()), root / "lang" / "bpe",
                          vocab_size=vocab_size, model_type="bpe")
    tok.write_tokens(root / "lang" / "tokens.txt")
    return TinyCorpus(root, root / "train", root / "dev", root / "lang" / "bpe.model", tok.vocab_size)


TINY_MODEL: Dict[str, Any] = {
    # the frozen CNN keeps tests fast (its backward dominates) and exercises frozen parameters
    "encoder": {"preset": "tiny", "conv_channels": 16, "embed_dim": 64, "num_layers": 1, "num_heads": 4,
                "ffn_dim": 128, "pos_conv": "chunk", "waveform_norm": "cumulative",
                "freeze_feature_extractor": True},
    "predictor": {"kind": "stateless", "embed_dim": 32, "context_size": 2},
    "joiner_dim": 32,
    "ctc_weight": 0.1,
}


def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def tiny_train_config(corpus: Optional[TinyCorpus] = None, **sections: Dict[str, Any]) -> Dict[str, Any]:
    """A plain-dict ``TrainConfig`` for a tiny CPU model; ``sections`` are merged in (nested dicts).

    Example: ``tiny_train_config(corpus, training={"max_updates": 6}, mask={"chunk_size": 16})``.
    """
    cfg: Dict[str, Any] = {
        "data": {"max_seconds": 3.0, "num_buckets": 2, "num_workers": 0},
        "model": TINY_MODEL,
        "optim": {"encoder_lr": 5e-4, "head_lr": 2e-3, "grad_clip": 5.0},
        "schedule": {"warmup_updates": 2, "decay": "noam"},
        "training": {"max_epochs": 100, "max_updates": 4, "seed": 1},
        "checkpoint": {"keep_last": 3, "keep_best": 2},
        "logging": {"log_interval": 1, "tensorboard": False},
    }
    if corpus is not None:
        cfg["data"].update(train_dir=str(corpus.train_dir), dev_dir=str(corpus.dev_dir),
                           tokenizer=str(corpus.tokenizer))
    return _merge(cfg, sections)


def tiny_overrides(corpus: TinyCorpus) -> Dict[str, Any]:
    """Dotted-key overrides (``load_config(..., overrides=)``, ``--set``) that point a recipe's
    stage config at a tiny corpus and shrink its model to :data:`TINY_MODEL` (mask untouched)."""
    out = {"data.train_dir": str(corpus.train_dir), "data.dev_dir": str(corpus.dev_dir),
           "data.tokenizer": str(corpus.tokenizer), "data.num_workers": 0, "data.max_seconds": 3.0,
           "logging.tensorboard": False, "logging.log_interval": 1}
    enc = {k: v for k, v in TINY_MODEL["encoder"].items() if k != "pos_conv"}  # the stage's own pos_conv
    out.update({f"model.encoder.{k}": v for k, v in enc.items()})
    out.update({f"model.predictor.{k}": v for k, v in TINY_MODEL["predictor"].items()})
    out["model.joiner_dim"] = TINY_MODEL["joiner_dim"]
    return out


def write_yaml(cfg: Dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def save_decoding_checkpoint(run: str | Path, sentences: Iterable[str], *, seed: int, waveform_norm: str,
                             extra: Optional[Dict[str, Any]] = None, conv_channels: int = 32) -> Path:
    """An untrained tiny transducer saved as ``run/best.pt`` (trainer format) with ``run/bpe.model``
    beside it, for decoding tests: its joiner is made louder so that its paths are clear-cut and it
    emits a few tokens per utterance.

    Args:
        run: the experiment folder (created).
        sentences: what the tokenizer (``V = 20``) is trained on.
        seed: ``torch.manual_seed`` before the model is built.
        waveform_norm: the encoder's waveform normalisation.
        extra: more entries of the checkpoint (e.g. its training ``config``).
        conv_channels: channels of the encoder's CNN (64 is the demo's ``mini`` width).
    """
    import torch

    from xtrans.checkpoint import model_checkpoint
    from xtrans.models.config import EncoderConfig, ModelConfig, PredictorConfig, build_model
    from xtrans.tokenizer import train_tokenizer

    run = Path(run)
    tokenizer = train_tokenizer(list(sentences), run / "bpe", vocab_size=20)
    torch.manual_seed(seed)
    cfg = ModelConfig(encoder=EncoderConfig(preset="tiny", pos_conv="chunk", waveform_norm=waveform_norm,
                                            conv_channels=conv_channels, embed_dim=64, num_layers=1, num_heads=4,
                                            ffn_dim=128),
                      predictor=PredictorConfig(kind="stateless", embed_dim=32, context_size=2), joiner_dim=32)
    model = build_model(cfg, vocab_size=tokenizer.vocab_size)
    with torch.no_grad():  # louder logits: clear-cut paths, a few tokens per utterance
        model.joiner.output.weight.mul_(4.0)
        model.joiner.output.bias[0] += 2.0
    path = run / "best.pt"
    torch.save({**model_checkpoint(model), **(extra or {})}, path)
    return path
