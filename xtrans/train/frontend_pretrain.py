"""Front-end pretraining: teach a randomly initialised CNN to predict log-mel features.

A from-scratch transducer on the raw-waveform CNN learns slowly: in the demo's front-end study
(``bench/frontend_study.py``) the same model on log-mel features reached 0.44 test WER after 900
updates, the batch-norm CNN 0.93 after 700. Without a pretrained encoder (the embedded demo),
recipe stage 4 therefore fits the CNN alone, with a linear head, to the standardised log-mel
features of the training audio, frame by frame (:mod:`xtrans.features` frames them like the CNN):

    loss = mean over valid frames t and filters m of (head(cnn(x))_t,m - (M_t,m - mu_m) / sigma_m)^2

with ``mu``, ``sigma`` estimated on the first batches. ``1 - loss`` is the explained share of the
standardised targets' variance. The head is thrown away; the CNN (and its batch-norm statistics)
is what stage 1 starts from. The architecture is unchanged, so streaming is unaffected.

Config (``conf/pretrain_frontend.yaml``)::

    train_dir: dump/train      # Kaldi data dir with utt2num_samples (recipe stage 2 output)
    max_seconds: 30.0          # padded seconds per batch
    max_updates: 600
    lr: 3.0e-3
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from xtrans.data.audio import load_waveform
from xtrans.data.dataset import Example, collate, utterance_durations
from xtrans.data.kaldi_dir import DataDir
from xtrans.data.sampler import DurationBatchSampler
from xtrans.features import log_mel
from xtrans.frames import SAMPLE_RATE
from xtrans.masks import key_padding_mask
from xtrans.models.wav2vec2.model import Wav2Vec2Encoder, normalize_waveform
from xtrans.train.scheduler import check_decay, lr_factor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrontendPretrainConfig:
    """How the CNN front end is fitted to log-mel features.

    Attributes:
        train_dir: Kaldi data directory of training audio (transcripts are not read).
        max_seconds: bound on a batch's padded duration, seconds.
        num_buckets: duration buckets of the batch sampler.
        max_updates: optimiser updates.
        lr: AdamW peak learning rate (no weight decay).
        warmup_updates: linear warm-up updates.
        decay: the rate after warm-up, as a training stage's ``schedule.decay``
            (:mod:`xtrans.train.scheduler`: ``constant``, ``cosine``, ``linear``, ``noam``), ending at
            ``max_updates``.
        min_lr_ratio: the rate at the end of a cosine or linear decay, relative to ``lr``.
        grad_clip: gradient-norm clip.
        n_mels: mel filters of the target.
        f_max: top of the highest filter in Hz (None = Nyquist); 4000 for audio upsampled from 8 kHz.
        stats_batches: batches used to estimate the targets' mean and standard deviation.
        seed: batch order seed.
    """

    train_dir: str = "dump/train"
    max_seconds: float = 30.0
    num_buckets: int = 5
    max_updates: int = 600
    lr: float = 3.0e-3
    warmup_updates: int = 50
    decay: str = "constant"
    min_lr_ratio: float = 0.0
    grad_clip: float = 5.0
    n_mels: int = 80
    f_max: Optional[float] = None
    stats_batches: int = 20
    seed: int = 0

    def __post_init__(self):
        for name in ("max_seconds", "lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected > 0, found {getattr(self, name)}")
        for name in ("max_updates", "n_mels", "stats_batches", "num_buckets"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, found {getattr(self, name)}")
        if self.warmup_updates < 0:
            raise ValueError(f"warmup_updates: expected >= 0, found {self.warmup_updates}")
        check_decay(self.decay)
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio: expected a ratio in [0, 1], found {self.min_lr_ratio}")


def waveform_batches(data: DataDir, max_seconds: float, *, num_buckets: int = 5, seed: int = 0,
                     sample_rate: int = SAMPLE_RATE, waveform_norm: str = "none"
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless duration-bucketed batches ``(waveforms (B, S) zero-padded, lengths (B,))``, reshuffled
    every epoch, normalised by ``waveform_norm`` (:func:`normalize_waveform`) as the CNN sees them."""
    durations = utterance_durations(data, sample_rate)
    sampler = DurationBatchSampler(durations, max_seconds, num_buckets=num_buckets, seed=seed)
    no_targets = torch.zeros(0, dtype=torch.int64)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for indices in sampler:
            examples = []
            for i in indices:
                utt = data.utt_ids[i]
                entry, segment = data.wav_entry(utt)
                wave = load_waveform(entry, utt_id=utt, segment=segment, sample_rate=sample_rate)
                examples.append(Example(utt, wave, no_targets))
            batch = collate(examples)
            yield normalize_waveform(batch.waveforms, batch.waveform_lengths, waveform_norm), batch.waveform_lengths
        epoch += 1


class LogMelTarget:
    """Standardised log-mel targets framed like ``encoder``'s CNN, computed from the CNN's input
    (the waveform after the encoder's waveform normalisation)."""

    def __init__(self, encoder: Wav2Vec2Encoder, n_mels: int, sample_rate: int = SAMPLE_RATE,
                 f_max: Optional[float] = None):
        self.encoder = encoder
        self.n_mels = n_mels
        self.f_max = f_max
        self.sample_rate = sample_rate
        self.mean = torch.zeros(n_mels)
        self.std = torch.ones(n_mels)

    def raw(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S), (B,) -> unstandardised targets (B, T, n_mels) and the valid-frame mask (B, T)."""
        fe = self.encoder.feature_extractor
        feats = log_mel(waveform, n_mels=self.n_mels, window=fe.receptive_field, hop=fe.stride,
                        sample_rate=self.sample_rate, f_max=self.f_max)
        frames = torch.minimum(self.encoder.output_lengths(lengths), torch.tensor(feats.shape[1]))
        return feats, key_padding_mask(frames, feats.shape[1])

    def fit(self, batches: List[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Mean and standard deviation per filter over the valid frames of ``batches`` (a filter that
        barely varies, e.g. above the band of upsampled audio, is not amplified: std >= 0.1)."""
        frames = torch.cat([feats[valid] for feats, valid in (self.raw(w, n) for w, n in batches)])
        self.mean, self.std = frames.mean(0), frames.std(0).clamp(min=0.1)

    def __call__(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, valid = self.raw(waveform, lengths)
        return (feats - self.mean) / self.std, valid


@dataclass
class FrontendPretrainResult:
    """What :func:`pretrain_frontend` measured.

    Attributes:
        history: ``{"update", "loss", "lr"}`` per update (training batches).
        dev_loss: the loss on the dev batches after training (None without dev data).
    """

    history: List[Dict[str, float]]
    dev_loss: Optional[float] = None


def pretrain_frontend(encoder: Wav2Vec2Encoder, data: DataDir, cfg: FrontendPretrainConfig, *,
                      dev: Optional[DataDir] = None, dev_batches: int = 10,
                      on_update: Optional[Callable[[int, float], None]] = None) -> FrontendPretrainResult:
    """Fits ``encoder.feature_extractor`` (in place) to the log-mel features of ``data``.

    Only the CNN is trained; the rest of the encoder is untouched. The loss is on standardised
    targets: 1.0 is what predicting the mean scores, ``1 - loss`` the explained variance.

    Args:
        encoder: the encoder whose CNN to train.
        data: training audio (``utt2num_samples`` or ``utt2dur`` needed for batching).
        cfg: the settings.
        dev: held-out audio, scored after training on its first ``dev_batches`` batches (CNN
            in evaluation mode, i.e. with its running batch-norm statistics).
        on_update: called after every update with ``(update, loss)``.
    """
    torch.manual_seed(cfg.seed)
    fe = encoder.feature_extractor
    batches = waveform_batches(data, cfg.max_seconds, num_buckets=cfg.num_buckets, seed=cfg.seed,
                               waveform_norm=encoder.waveform_norm)
    target = LogMelTarget(encoder, cfg.n_mels, f_max=cfg.f_max)
    target.fit([next(batches) for _ in range(cfg.stats_batches)])
    head = nn.Linear(fe.conv_layers_spec[-1][0], cfg.n_mels)
    params = list(fe.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    was_training = fe.training
    grad_flags = [q.requires_grad for q in fe.parameters()]  # a config may freeze the CNN for stage 1
    history = []
    try:
        fe.requires_grad_(True)
        fe.train()
        for update in range(1, cfg.max_updates + 1):
            lr = cfg.lr * lr_factor(update, warmup=cfg.warmup_updates, decay=cfg.decay, total=cfg.max_updates,
                                    min_ratio=cfg.min_lr_ratio)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = frontend_loss(encoder, head, target, *next(batches))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            history.append({"update": update, "loss": float(loss.detach()), "lr": lr})
            if on_update is not None:
                on_update(update, history[-1]["loss"])
        dev_loss = None
        if dev is not None:
            fe.eval()
            held_out = waveform_batches(dev, cfg.max_seconds, num_buckets=1, seed=0,
                                        waveform_norm=encoder.waveform_norm)
            with torch.no_grad():
                dev_loss = sum(float(frontend_loss(encoder, head, target, *next(held_out)))
                               for _ in range(dev_batches)) / dev_batches
    finally:
        fe.train(was_training)
        for q, flag in zip(fe.parameters(), grad_flags):
            q.requires_grad_(flag)
    tail = history[-20:]
    logger.info("front end fitted to log-mel: %d updates, training loss %.3f (last %d), dev loss %s",
                cfg.max_updates, sum(h["loss"] for h in tail) / len(tail), len(tail),
                "-" if dev_loss is None else f"{dev_loss:.3f}")
    return FrontendPretrainResult(history, dev_loss)


def frontend_loss(encoder: Wav2Vec2Encoder, head: nn.Module, target: LogMelTarget, waveform: torch.Tensor,
                  lengths: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``head(cnn(waveform))`` against the targets over the valid frames;
    ``waveform`` is the CNN's input (already normalised, as :func:`waveform_batches` yields it)."""
    goal, valid = target(waveform, lengths)                                      # (B, T, n_mels), (B, T)
    feats, _ = encoder.feature_extractor(waveform, lengths)                      # (B, T', C)
    T = min(feats.shape[1], goal.shape[1])
    valid = valid[:, :T]
    return F.mse_loss(head(feats[:, :T])[valid], goal[:, :T][valid])
