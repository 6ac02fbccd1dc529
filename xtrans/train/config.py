"""Training configs: frozen dataclasses loaded from a stage's ``conf/train_stage*.yaml``.

One file per training stage (docs/streaming.md, "Training stages")::

    data:       {train_dir, dev_dir, tokenizer, max_seconds, ...}
    model:      ModelConfig (encoder preset/options, predictor, joiner, ctc_weight)
    mask:       the stage's streaming mask (full / chunk / left context / sinks / multi-chunk)
    optim:      AdamW, separate encoder and head learning rates, clipping, accumulation
    schedule:   warm-up then decay
    training:   epochs/updates, encoder freezing, precision, seed
    checkpoint: intervals, keep-last-k, best-k by dev loss (or WER), averaging
    logging:    log interval

Mutable run state lives in :class:`xtrans.train.state.TrainState`, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from xtrans.data.augment.pipeline import Pipeline, combined_entries
from xtrans.data.dataset import check_gain_range
from xtrans.frames import SAMPLE_RATE
from xtrans.masks import StreamingConfig
from xtrans.models.config import ModelConfig
from xtrans.train.multichunk import MultiChunkConfig
from xtrans.train.scheduler import check_decay


@dataclass(frozen=True)
class DataConfig:
    """Training and dev data and batching.

    Attributes:
        train_dir: Kaldi data directory (with ``utt2num_samples`` or ``utt2dur``).
        dev_dir: dev data directory; ``None`` = no validation (``best.pt`` follows the train loss).
        tokenizer: the sentencepiece ``.model`` (blank = 0).
        max_seconds: bound on a batch's padded duration (``B * longest utterance``), seconds.
        max_batch_size: optional cap on utterances per batch.
        num_buckets: duration buckets of the batch sampler.
        dev_max_seconds: batch bound for the dev set (``None`` = ``max_seconds``).
        num_workers: ``DataLoader`` worker processes (0 = load in the training process).
        sample_rate: model input rate in Hz.
        speed_factors: speed perturbation factors (``None`` = off).
        num_time_masks: waveform time masks per utterance (0 = off).
        gain_db: gain perturbation ``[low, high]`` in dB, drawn uniformly per utterance and
            applied before any normalisation, saturating at full scale (``None`` = off); e.g.
            ``[-35, 10]`` trains for microphones from 35 dB quieter to 10 dB louder.
        augment: the augmentation pipeline, an ordered list of ``{kind: ..., prob: ..., ...}``
            entries (:mod:`xtrans.data.augment.pipeline`: noise, babble, generated noise,
            reverberation, channels, speed, time masks, gain); the three options above are entries
            of it: speed and time masks before these entries, gain after them.
        noise_scp: a noise list (``<id> <wav entry>`` per line, e.g. MUSAN) added as a ``noise``
            entry after ``augment``, applied with ``noise_prob`` at an SNR in ``noise_snr_db``
            (ESPnet's ``noise_scp`` / ``noise_apply_prob`` / ``noise_db_range``); ``None`` = none.
        noise_prob: its probability per utterance.
        noise_snr_db: its SNR range ``[low, high]`` in dB.
        rir_scp: a list of room impulse responses (e.g. RIRS_NOISES) added as a ``reverb`` entry
            before ``augment``, applied with ``rir_prob``; ``None`` = none.
        rir_prob: its probability per utterance.
    """

    train_dir: str = "data/train"
    dev_dir: Optional[str] = "data/dev"
    tokenizer: str = "data/lang_bpe/bpe.model"
    max_seconds: float = 200.0
    max_batch_size: Optional[int] = None
    num_buckets: int = 10
    dev_max_seconds: Optional[float] = None
    num_workers: int = 2
    sample_rate: int = SAMPLE_RATE
    speed_factors: Optional[Tuple[float, ...]] = None
    num_time_masks: int = 0
    gain_db: Optional[Tuple[float, float]] = None
    augment: Optional[Tuple[Dict[str, Any], ...]] = None
    noise_scp: Optional[str] = None
    noise_prob: float = 0.5
    noise_snr_db: Tuple[float, float] = (0.0, 20.0)
    rir_scp: Optional[str] = None
    rir_prob: float = 0.5

    def __post_init__(self):
        if not self.max_seconds > 0:
            raise ValueError(f"max_seconds: expected > 0, found {self.max_seconds}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: expected >= 0, found {self.num_workers}")
        if self.gain_db is not None:
            check_gain_range(self.gain_db)
        if self.augment or self.noise_scp is not None or self.rir_scp is not None:
            Pipeline(self.augment_entries(), "data")  # every entry checked at load

    def augment_entries(self) -> Tuple[Dict[str, Any], ...]:
        """The pipeline's entries: ``speed_factors`` and ``num_time_masks`` (as ``speed`` and
        ``time_mask`` entries), ``rir_scp`` (a ``reverb`` entry), then ``augment``, ``noise_scp``
        (a ``noise`` entry), then ``gain_db`` (a ``gain`` entry: the microphone's level comes last)."""
        entries = list(self.augment or ())
        if self.rir_scp is not None:
            entries.insert(0, {"kind": "reverb", "rir_scp": self.rir_scp, "prob": self.rir_prob})
        if self.noise_scp is not None:
            entries.append({"kind": "noise", "scp": self.noise_scp, "snr_db": tuple(self.noise_snr_db),
                            "prob": self.noise_prob})
        return combined_entries(entries, self.speed_factors, self.num_time_masks, gain_db=self.gain_db)


@dataclass(frozen=True)
class MaskConfig:
    """The stage's streaming mask (the chunk rule of ``xtrans.masks``).

    Either a fixed configuration (``chunk_size``/``left_context``/``num_sinks``; all unset =
    full attention) or ``multi_chunk`` (stage 4: the chunk size drawn per batch).

    Attributes:
        chunk_size: ``C`` frames; ``None`` = full attention.
        left_context: ``L`` frames; ``None`` = unlimited.
        num_sinks: ``S`` sink frames.
        multi_chunk: draw the configuration per batch (exclusive with the three above).
        valid_chunk_size: chunk size used for dev loss with ``multi_chunk``
            (``None`` = the smallest chunk it can draw).
    """

    chunk_size: Optional[int] = None
    left_context: Optional[int] = None
    num_sinks: int = 0
    multi_chunk: Optional[MultiChunkConfig] = None
    valid_chunk_size: Optional[int] = None

    def __post_init__(self):
        if self.multi_chunk is not None and (self.chunk_size is not None or self.left_context is not None
                                             or self.num_sinks):
            raise ValueError("multi_chunk: give either multi_chunk or chunk_size/left_context/num_sinks, "
                             "not both (put left_context and num_sinks inside multi_chunk)")
        StreamingConfig(self.chunk_size, self.left_context, self.num_sinks)  # validates

    def fixed(self) -> Optional[StreamingConfig]:
        """The fixed configuration (``None`` = full attention); ``None`` also for multi-chunk."""
        if self.multi_chunk is not None:
            return None
        cfg = StreamingConfig(self.chunk_size, self.left_context, self.num_sinks)
        return None if cfg.is_full else cfg

    def for_validation(self) -> Optional[StreamingConfig]:
        """The configuration dev loss is computed under."""
        mc = self.multi_chunk
        if mc is None:
            return self.fixed()
        chunk = self.valid_chunk_size
        if chunk is None:
            chunk = min(mc.chunk_sizes) if mc.chunk_sizes is not None else mc.chunk_range[0]
        return StreamingConfig(chunk, mc.left_context, mc.num_sinks)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with two parameter groups.

    Attributes:
        encoder_lr: peak learning rate of the encoder.
        head_lr: peak learning rate of predictor, joiner and CTC head.
        betas, eps, weight_decay: AdamW (weight decay is not applied to biases and norms).
        grad_clip: clip the global gradient norm to this (``None`` = no clipping).
        accum_grad: micro-batches per update.
    """

    encoder_lr: float = 5e-5
    head_lr: float = 1e-3
    betas: Tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip: Optional[float] = 5.0
    accum_grad: int = 1

    def __post_init__(self):
        if self.accum_grad < 1:
            raise ValueError(f"accum_grad: expected >= 1, found {self.accum_grad}")
        if self.encoder_lr < 0 or self.head_lr < 0:
            raise ValueError("encoder_lr/head_lr: expected >= 0")


@dataclass(frozen=True)
class ScheduleConfig:
    """Linear warm-up to the peak learning rate, then decay.

    Attributes:
        warmup_updates: updates of linear warm-up from 0.
        decay: ``cosine`` (to ``min_lr_ratio`` at ``total_updates``), ``linear`` (same end),
            ``noam`` (inverse square root of the update after warm-up) or ``constant``.
        total_updates: the end of cosine/linear decay (``None`` = ``training.max_updates``).
        min_lr_ratio: final learning rate as a fraction of the peak.
    """

    warmup_updates: int = 1000
    decay: str = "cosine"
    total_updates: Optional[int] = None
    min_lr_ratio: float = 0.01

    def __post_init__(self):
        check_decay(self.decay)
        if self.warmup_updates < 0:
            raise ValueError(f"warmup_updates: expected >= 0, found {self.warmup_updates}")


@dataclass(frozen=True)
class TrainingConfig:
    """The loop.

    Attributes:
        max_epochs: stop after this many epochs.
        max_updates: stop after this many updates (``None`` = only ``max_epochs``).
        freeze_encoder_updates: the encoder receives no update during the first N updates.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast, CUDA only; fp16 adds a GradScaler).
        seed: seeds python, numpy, torch, the batch sampler and the multi-chunk draws.
        find_unused_parameters: DDP option; ``None`` = on when layer drop or encoder freezing
            can leave parameters without gradient.
    """

    max_epochs: int = 30
    max_updates: Optional[int] = None
    freeze_encoder_updates: int = 0
    precision: str = "fp32"
    seed: int = 1
    find_unused_parameters: Optional[bool] = None

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision: expected fp32, bf16 or fp16, found {self.precision!r}")


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpointing.

    Attributes:
        save_interval_updates: also save every N updates (``None`` = only at epoch ends).
        valid_interval_updates: compute dev loss every N updates (``None`` = at epoch ends).
        keep_last: step checkpoints kept (``ckpt_step<N>.pt``); epoch checkpoints are kept too
            up to the same count.
        keep_best: best checkpoints kept (``best.pt`` is the best one).
        best_metric: ``dev_loss`` or ``dev_wer`` (WER needs ``xtrans.search.greedy``).
        wer_max_utts: dev utterances decoded for WER (``None`` = all).
        average: average this many best checkpoints into ``average.pt`` at the end (0 = off).
    """

    save_interval_updates: Optional[int] = None
    valid_interval_updates: Optional[int] = None
    keep_last: int = 5
    keep_best: int = 5
    best_metric: str = "dev_loss"
    wer_max_utts: Optional[int] = None
    average: int = 0

    def __post_init__(self):
        if self.best_metric not in ("dev_loss", "dev_wer"):
            raise ValueError(f"best_metric: expected dev_loss or dev_wer, found {self.best_metric!r}")
        if self.keep_last < 1 or self.keep_best < 1:
            raise ValueError("keep_last/keep_best: expected >= 1")


@dataclass(frozen=True)
class LoggingConfig:
    """``train.log`` line every ``log_interval`` updates; TensorBoard in ``<outdir>/tensorboard``."""

    log_interval: int = 50
    tensorboard: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training stage needs (see the module docstring)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
