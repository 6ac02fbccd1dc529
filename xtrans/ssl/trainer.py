"""The pretraining loop: targets, masked prediction updates, checkpoints, logs, exact resume.

::

    trainer = SslPretrainer(cfg, data, outdir, arch=encoder_arch)    # a new run (seeded by cfg.seed)
    trainer = SslPretrainer(cfg, data, outdir, resume="auto")        # continue the latest checkpoint
    trainer.fit(on_update=...)
    trainer.save_encoder(outdir / "encoder.pt")

A new run seeds python, numpy and torch with ``cfg.seed``, builds the encoder (``arch``, with
``init`` weights if given) and the head (:class:`~xtrans.ssl.model.MaskedPredictionModel`), then
fits the targets' codebook (:mod:`xtrans.ssl.targets`; its draws come from its own seeded
generator and leave torch's untouched). Each update takes one batch of
:class:`~xtrans.data.sampler.DurationBatchSampler`, computes its targets, draws the masks from
torch's default generator, and steps AdamW under the warm-up/decay schedule of
:mod:`xtrans.train.scheduler`.

Every ``save_interval_updates`` updates and at the end, ``ckpt_step<N>.pt`` holds what continues
the run exactly (:mod:`xtrans.ssl.checkpoint`): weights, optimizer, scheduler, codebook, the
sampler position and the random generators. A resumed run gives the same batches, masks, dropout
and losses as one that was never interrupted; ``steps.jsonl`` (one JSON line per update) is cut
back to the resumed update first, so that it reads as the uninterrupted run's.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch

from xtrans.checkpoint import CheckpointError, atomic_save, atomic_write_text, load_checkpoint
from xtrans.config import from_dict, save_config, to_dict
from xtrans.data.dataset import collate
from xtrans.data.kaldi_dir import DataDir
from xtrans.data.sampler import DurationBatchSampler
from xtrans.frames import SAMPLE_RATE
from xtrans.models.arch import EncoderArch
from xtrans.models.wav2vec2.model import Wav2Vec2Encoder
from xtrans.models.wav2vec2.names import fit_optional_weights
from xtrans.ssl.checkpoint import (SSL_CHECKPOINT_FORMAT, SSL_CHECKPOINT_VERSION, encoder_from_file_contents,
                                   load_encoder, save_encoder_file)
from xtrans.ssl.config import PretrainConfig
from xtrans.ssl.data import AudioDataset, audio_durations, sampled_waveforms
from xtrans.ssl.model import MaskedPredictionModel
from xtrans.ssl.targets import FeatureSpec, FrameTargets, fit_frame_targets, log_mel_spec
from xtrans.train.checkpoint import checkpoint_name, find_latest, prune
from xtrans.train.scheduler import WarmupDecayScheduler
from xtrans.train.state import TrainState, capture_rng, restore_rng, seed_everything

logger = logging.getLogger(__name__)

__all__ = ["RESUMABLE_CHANGES", "SslPretrainer", "UpdateRecord", "resume_config"]

RESUMABLE_CHANGES = ("max_updates", "save_interval_updates", "keep_last", "num_workers")
"""Settings a resumed run may change (the others would make it another run)."""


@dataclass
class UpdateRecord:
    """One update, as a line of ``steps.jsonl`` (no wall-clock values: a resumed run's lines equal
    the uninterrupted run's)."""

    step: int
    epoch: int
    loss: float
    masked_loss: float
    masked_accuracy: float
    unmasked_loss: float
    unmasked_accuracy: float
    masked_frames: int
    unmasked_frames: int
    utts: int
    grad_norm: float
    lr: float
    skipped: bool = False


def resume_config(stored: Mapping[str, Any], given: Mapping[str, Any], source: str) -> PretrainConfig:
    """The config of a resumed run: the checkpoint's, with ``given`` settings (those set on the
    command line) that :data:`RESUMABLE_CHANGES` allows.

    Raises:
        ValueError: a given setting that differs from the checkpoint's and may not change (named).
    """
    cfg = from_dict(PretrainConfig, stored, source)
    new = from_dict(PretrainConfig, {**to_dict(cfg), **given}, "the command line")
    changed = sorted(k for k in given if getattr(new, k) != getattr(cfg, k))
    fixed = [k for k in changed if k not in RESUMABLE_CHANGES]
    if fixed:
        raise ValueError(f"{fixed[0]}: the run in {source} has {fixed[0]}={getattr(cfg, fixed[0])!r}, found "
                         f"{getattr(new, fixed[0])!r}; a resumed run keeps its settings except "
                         f"{', '.join(RESUMABLE_CHANGES)} (start a new --outdir instead)")
    if changed:
        logger.warning("resuming with %s changed", ", ".join(f"{k}={getattr(new, k)!r}" for k in changed))
    return new


class SslPretrainer:
    """HuBERT-style pretraining of one encoder on one data directory.

    Args:
        cfg: the settings (for ``resume``: the new values of :data:`RESUMABLE_CHANGES`, see
            ``given``).
        data: the unlabelled training audio.
        outdir: the run directory.
        arch: a new run's encoder; its ``mask_prob`` and ``mask_length`` are replaced by the
            config's.
        init: a new run's initial encoder weights (``state_dict`` of an encoder of ``arch``; a
            mask embedding on one side only is dropped or initialised).
        source: where the encoder comes from, recorded in the files written.
        resume: a checkpoint to continue, or ``"auto"`` for the latest in ``outdir`` (a new run
            with ``arch`` when there is none).
        given: with ``resume``: the settings set on the command line (checked against the
            checkpoint's by :func:`resume_config`).
        dev: held-out audio: its masked prediction loss and accuracy at every checkpoint, with
            masks from a generator seeded by ``cfg.seed`` (the same masks every time).
        device: where to train (default: CUDA when available).

    Raises:
        ValueError: neither ``arch`` nor a checkpoint to resume; a checkpoint of another kind.
        CheckpointError: an unreadable checkpoint.
    """

    def __init__(self, cfg: PretrainConfig, data: DataDir, outdir: str | Path, *,
                 arch: Optional[EncoderArch] = None, init: Optional[Dict[str, torch.Tensor]] = None,
                 source: str = "", resume: Optional[str] = None, given: Optional[Mapping[str, Any]] = None,
                 dev: Optional[DataDir] = None, device: Optional[torch.device] = None,
                 on_progress: Optional[Callable[[str, int], None]] = None):
        self.outdir = Path(outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.on_progress = on_progress
        ckpt = self._find_resume(resume)
        if ckpt is None and arch is None:
            raise ValueError("arch: expected the encoder of a new run, found None (and no checkpoint to resume)")
        if ckpt is not None:
            cfg = resume_config(ckpt["config"], dict(given or {}), str(ckpt["_path"]))
        self.cfg = cfg
        self.dataset = AudioDataset(data)
        durations = audio_durations(data, on_measure=self._progress("durations"))
        self.durations = durations
        self.sampler = DurationBatchSampler(durations, cfg.max_seconds, num_buckets=cfg.num_buckets, seed=cfg.seed)
        self.dev_set = None if dev is None else AudioDataset(dev)
        self.dev_durations = None if dev is None else audio_durations(dev)

        if ckpt is None:
            seed_everything(cfg.seed)
            encoder = Wav2Vec2Encoder(**replace(arch, mask_prob=cfg.mask_prob, mask_length=cfg.mask_length).kwargs())
            if init is not None:
                encoder.load_state_dict(fit_optional_weights(encoder.state_dict(), init, source or "init"))
            self.source = source
        else:
            encoder = encoder_from_file_contents(ckpt, str(ckpt["_path"]))
            self.source = ckpt.get("source", "")
        self.model = MaskedPredictionModel(encoder=encoder, num_clusters=cfg.num_clusters, proj_dim=cfg.proj_dim,
                                           temperature=cfg.temperature, unmasked_weight=cfg.unmasked_weight)
        if ckpt is not None:
            self.model.load_state_dict({**{f"encoder.{k}": v for k, v in ckpt["encoder"].items()}, **ckpt["head"]})
        self.model.to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        self.scheduler = WarmupDecayScheduler(self.optimizer, warmup_updates=cfg.warmup_updates, decay=cfg.decay,
                                              total_updates=cfg.max_updates, min_lr_ratio=cfg.min_lr_ratio)
        if ckpt is None:
            # the codebook's draws come from its own generator; fork so that loading a teacher
            # (which initialises a model) leaves the training run's generator where the seed put it
            with torch.random.fork_rng(devices=[]):
                self.targets = self._fit_targets(encoder)
            self.state = TrainState()
            self._truncate_logs(0)
        else:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.targets = FrameTargets.from_state_dict(ckpt["targets"], self._teacher(encoder))
            self.state = TrainState.from_state_dict(ckpt["train_state"])
            self.sampler.load_state_dict(self.state.sampler)
            restore_rng(self.state.rng[0])
            self._truncate_logs(self.state.step)
            logger.info("resumed from %s at update %d (epoch %d, batch %d)", ckpt["_path"], self.state.step,
                        self.state.epoch, self.state.batches_in_epoch)
        self.targets.to(self.device)
        self._window: List[float] = []

    # ------------------------------------------------------------------ setup

    def _progress(self, what: str) -> Optional[Callable[[int], None]]:
        if self.on_progress is None:
            return None
        return lambda n: self.on_progress(what, n)

    def _find_resume(self, resume: Optional[str]) -> Optional[Dict[str, Any]]:
        if resume is None:
            return None
        path = find_latest(self.outdir) if resume == "auto" else Path(resume)
        if path is None:
            logger.warning("resume: no checkpoint in %s yet; starting from the beginning", self.outdir)
            return None
        ckpt = load_checkpoint(path)
        if ckpt.get("format") != SSL_CHECKPOINT_FORMAT:
            raise CheckpointError(path, f"not a pretraining checkpoint of xtrans.bin.pretrain_ssl (format "
                                        f"{ckpt.get('format')!r}, expected {SSL_CHECKPOINT_FORMAT!r})")
        if ckpt.get("version", 0) > SSL_CHECKPOINT_VERSION:
            raise CheckpointError(path, f"format version {ckpt['version']} is newer than this xtrans knows "
                                        f"({SSL_CHECKPOINT_VERSION}); update xtrans")
        ckpt["_path"] = path
        return ckpt

    def _teacher(self, encoder: Wav2Vec2Encoder) -> Optional[Wav2Vec2Encoder]:
        """The model of iteration 2's features (evaluation mode), checked to frame like ``encoder``."""
        if self.cfg.iteration == 1:
            return None
        teacher = load_encoder(self.cfg.features_from).eval()
        S = torch.arange(encoder.feature_extractor.receptive_field + 8 * encoder.feature_extractor.stride + 1)
        if not torch.equal(teacher.output_lengths(S), encoder.output_lengths(S)):
            raise ValueError(f"features_from: {self.cfg.features_from} frames audio differently from the encoder "
                             "being pretrained (another CNN); its layer cannot give one target per frame")
        if self.cfg.layer > len(teacher.layers):
            raise ValueError(f"layer: expected 1..{len(teacher.layers)} (the layers of {self.cfg.features_from}), "
                             f"found {self.cfg.layer}")
        return teacher.to(self.device)

    def _fit_targets(self, encoder: Wav2Vec2Encoder) -> FrameTargets:
        cfg = self.cfg
        teacher = self._teacher(encoder)
        if teacher is None:
            spec = log_mel_spec(encoder, cfg.n_mels, cfg.f_max)
        else:
            spec = FeatureSpec(kind="layer", features_from=str(cfg.features_from), layer=cfg.layer,
                               waveform_norm=encoder.waveform_norm)
        logger.info("fitting %d clusters of %s on up to %d frames", cfg.num_clusters,
                    "log-mel frames" if teacher is None else f"layer {cfg.layer} of {cfg.features_from}",
                    cfg.kmeans_max_frames)
        return fit_frame_targets(spec, sampled_waveforms(self.dataset, cfg.seed), cfg.num_clusters,
                                 max_frames=cfg.kmeans_max_frames, seed=cfg.seed, max_iter=cfg.kmeans_max_iter,
                                 teacher=teacher, device=self.device, on_utterance=self._progress("k-means frames"))

    def _truncate_logs(self, step: int) -> None:
        """Keeps the lines of ``steps.jsonl`` and ``metrics.jsonl`` up to update ``step`` (a killed run
        may have logged past its last checkpoint; a new run starts them empty)."""
        for path in (self.outdir / "steps.jsonl", self.outdir / "metrics.jsonl"):
            kept = []
            if path.is_file() and step > 0:
                for line in path.read_text(encoding="utf-8").splitlines():
                    try:
                        if json.loads(line)["step"] <= step:
                            kept.append(line + "\n")
                    except (ValueError, KeyError, TypeError):  # a line cut by the kill
                        continue
            atomic_write_text("".join(kept), path)

    # ------------------------------------------------------------------ updates

    def _loader(self):
        # a private generator: creating a loader iterator must not draw from torch's default one
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=collate,
                                           num_workers=self.cfg.num_workers,
                                           generator=torch.Generator().manual_seed(self.cfg.seed))

    def train_update(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> UpdateRecord:
        """One optimizer update on a padded batch (B, S), (B,); a non-finite loss or gradient skips it."""
        self.model.train()
        waveforms, lengths = waveforms.to(self.device), lengths.to(self.device)
        targets, _ = self.targets(waveforms, lengths)
        out = self.model(waveforms, lengths, targets)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        lr = self.optimizer.param_groups[0]["lr"]
        loss = float(out.loss.detach())
        skipped = not (math.isfinite(loss) and math.isfinite(grad_norm))
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self.state.skipped_batches += 1
            logger.warning("update %d: non-finite loss or gradient (%s, %s); batch skipped",
                           self.state.step + 1, loss, grad_norm)
        else:
            self.optimizer.step()
            self.scheduler.step()
        return UpdateRecord(step=self.state.step + (not skipped), epoch=self.state.epoch, loss=loss,
                            masked_loss=out.masked_loss, masked_accuracy=out.masked_accuracy,
                            unmasked_loss=out.unmasked_loss, unmasked_accuracy=out.unmasked_accuracy,
                            masked_frames=out.masked_frames, unmasked_frames=out.unmasked_frames,
                            utts=int(lengths.shape[0]), grad_norm=grad_norm, lr=lr, skipped=skipped)

    @torch.no_grad()
    def evaluate(self) -> Dict[str, float]:
        """Masked prediction loss and accuracy on the dev audio (fixed masks); ``{}`` without dev data."""
        if self.dev_set is None:
            return {}
        self.model.eval()
        sampler = DurationBatchSampler(self.dev_durations, self.cfg.max_seconds, num_buckets=1, shuffle=False)
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        loss = correct = frames = 0.0
        for indices in sampler:
            batch = collate([self.dev_set[i] for i in indices])
            waveforms, lengths = batch.waveforms.to(self.device), batch.waveform_lengths.to(self.device)
            targets, _ = self.targets(waveforms, lengths)
            out = self.model(waveforms, lengths, targets, generator=generator)
            loss += out.masked_loss * out.masked_frames
            correct += out.masked_accuracy * out.masked_frames
            frames += out.masked_frames
        self.model.train()
        return {"dev_loss": loss / max(frames, 1), "dev_accuracy": correct / max(frames, 1)}

    # ------------------------------------------------------------------ the loop

    def fit(self, on_update: Optional[Callable[[UpdateRecord], None]] = None) -> TrainState:
        """Trains until ``max_updates``; saves every ``save_interval_updates`` and at the end.

        Args:
            on_update: called after every update with its record (the command line's progress bar).
        """
        st, cfg = self.state, self.cfg
        n_params = sum(p.numel() for p in self.model.encoder.parameters())
        logger.info("pretraining %s: encoder %.2fM parameters, %d clusters, mask %.2f x %d frames, device %s, "
                    "from update %d to %d", self.outdir, n_params / 1e6, cfg.num_clusters, cfg.mask_prob,
                    cfg.mask_length, self.device, st.step, cfg.max_updates)
        save_config(cfg, self.outdir / "config.yaml")
        with open(self.outdir / "steps.jsonl", "a", encoding="utf-8") as steps:
            while st.step < cfg.max_updates:
                if st.batches_in_epoch == 0:
                    self.sampler.set_epoch(st.epoch)
                else:  # resumed mid-epoch
                    self.sampler.epoch, self.sampler.position = st.epoch, st.batches_in_epoch
                num_batches = len(self.sampler)  # before iterating: a prefetching loader moves the sampler on
                for batch in self._loader():
                    st.batches_in_epoch += 1
                    record = self.train_update(batch.waveforms, batch.waveform_lengths)
                    st.audio_seconds += float(batch.waveform_lengths.sum()) / SAMPLE_RATE
                    if not record.skipped:
                        st.step += 1
                        self._window.append(record.loss)
                    steps.write(json.dumps(asdict(record)) + "\n")
                    steps.flush()
                    if on_update is not None:
                        on_update(record)
                    epoch_done = st.batches_in_epoch >= num_batches
                    if epoch_done:
                        st.epoch += 1
                        st.batches_in_epoch = 0
                    if not record.skipped and (st.step % cfg.save_interval_updates == 0 or st.step >= cfg.max_updates):
                        self.save()
                    if epoch_done or st.step >= cfg.max_updates:
                        break
        logger.info("finished at update %d, epoch %d; %.2f h of audio; %d batches skipped", st.step, st.epoch,
                    st.audio_seconds / 3600, st.skipped_batches)
        return st

    def save(self) -> Path:
        """Writes ``ckpt_step<N>.pt`` (what resumes exactly), ``latest.txt``; keeps the last ``keep_last``."""
        st = self.state
        metrics = {"train_loss": sum(self._window) / len(self._window) if self._window else None}
        metrics.update(self.evaluate())
        self._window = []
        st.sampler = dict(self.sampler.state_dict(), epoch=st.epoch, position=st.batches_in_epoch)
        st.rng = [capture_rng()]
        name = checkpoint_name(st.step)
        if name not in st.last:
            st.last.append(name)
        del st.last[:-self.cfg.keep_last]
        with open(self.outdir / "metrics.jsonl", "a", encoding="utf-8") as f:  # cut back on resume if the save dies
            f.write(json.dumps({"step": st.step, "epoch": st.epoch, **metrics}) + "\n")
        encoder = self.model.encoder
        head = {k: v for k, v in self.model.state_dict().items() if not k.startswith("encoder.")}
        atomic_save({"format": SSL_CHECKPOINT_FORMAT, "version": SSL_CHECKPOINT_VERSION,
                     "encoder": encoder.state_dict(), "arch": encoder.arch.to_dict(), "source": self.source,
                     "head": head, "targets": self.targets.state_dict(), "config": to_dict(self.cfg),
                     "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "train_state": st.state_dict(), "metrics": metrics}, self.outdir / name)
        atomic_write_text(name + "\n", self.outdir / "latest.txt")
        deleted = prune(self.outdir, st.last)
        logger.info("saved %s: %s%s", name, " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None),
                    f"; removed {', '.join(deleted)}" if deleted else "")
        return self.outdir / name

    def save_encoder(self, path: str | Path) -> Path:
        """The pretrained encoder as an encoder-only file (``import_encoder``'s format; ``train --init``)."""
        source = f"{self.source}+hubert_iter{self.cfg.iteration}_k{self.cfg.num_clusters}:{self.state.step}"
        return save_encoder_file(self.model.encoder, path, source.lstrip("+"))
