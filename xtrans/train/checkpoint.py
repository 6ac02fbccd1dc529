"""A training run's checkpoints: keep-last-k, best-k, initialisation and averaging.

The format and its atomic file I/O live in :mod:`xtrans.checkpoint` (inference reads them
without the training code); they are re-exported here. Files in ``<outdir>``: ``ckpt_step<N>.pt``
(every ``save_interval_updates`` and at epoch ends), ``latest.txt`` (name of the newest complete
one), ``best.pt`` (hard link or copy of the best by dev loss or WER), ``average.pt`` (see
:func:`average_state_dicts`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn

from xtrans.checkpoint import (CHECKPOINT_VERSION, CheckpointError, atomic_save, atomic_write_text, fsync_dir,
                               load_checkpoint, read_arch)
from xtrans.config import ConfigError, from_dict
from xtrans.masks import StreamingConfig
from xtrans.models.wav2vec2.names import fit_optional_weights
from xtrans.train.config import MaskConfig

logger = logging.getLogger(__name__)

__all__ = ["AUXILIARY_HEADS", "CHECKPOINT_VERSION", "CheckpointError", "atomic_save", "atomic_write_text",
           "average_checkpoints", "average_state_dicts", "checkpoint_name", "find_latest", "link_or_copy",
           "load_checkpoint", "load_init", "prune", "step_of", "update_best"]

_STEP_RE = re.compile(r"^ckpt_step(\d+)\.pt$")


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Makes ``dst`` the same file as ``src`` (hard link, else copy), atomically.

    When ``dst`` already is ``src`` (the same inode) only a stale ``<dst>.tmp`` is removed:
    POSIX ``rename`` between two links of one inode does nothing and would leave the temporary
    link behind.
    """
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)  # also one left by a killed process (or by older versions of this)
    if dst.exists() and os.path.samefile(src, dst):
        return
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)  # also the no-op rename of a link onto its own inode (a race)
    fsync_dir(dst.parent)


def step_of(name: str) -> Optional[int]:
    """The update number in ``ckpt_step<N>.pt``, else ``None``."""
    m = _STEP_RE.match(Path(name).name)
    return int(m.group(1)) if m else None


def checkpoint_name(step: int) -> str:
    return f"ckpt_step{step}.pt"


def find_latest(outdir: str | os.PathLike) -> Optional[Path]:
    """The newest complete checkpoint of a run directory (``latest.txt``, else the highest step)."""
    outdir = Path(outdir)
    pointer = outdir / "latest.txt"
    if pointer.is_file():
        candidate = outdir / pointer.read_text().strip()
        if candidate.is_file():
            return candidate
    steps = sorted((step_of(p.name), p) for p in outdir.glob("ckpt_step*.pt") if step_of(p.name) is not None)
    return steps[-1][1] if steps else None


def prune(outdir: str | os.PathLike, keep: Iterable[str]) -> List[str]:
    """Deletes ``ckpt_step*.pt`` files of ``outdir`` not named in ``keep``; returns the deleted names."""
    keep = set(keep)
    deleted = []
    for p in Path(outdir).glob("ckpt_step*.pt"):
        if p.name not in keep and step_of(p.name) is not None:
            p.unlink(missing_ok=True)
            deleted.append(p.name)
    return sorted(deleted)


def update_best(best: List[List[Any]], score: float, name: str, keep: int) -> bool:
    """Inserts ``(score, name)`` into the best list (lower is better), keeping ``keep`` entries.

    Returns:
        True when ``name`` is now the best.
    """
    best.append([float(score), name])
    best.sort(key=lambda e: (e[0], step_of(e[1]) or 0))
    del best[keep:]
    return best[0][1] == name


# --------------------------------------------------------------------------- initialisation

def _state_dict_of(obj: Any) -> Optional[Dict[str, torch.Tensor]]:
    """The tensor mapping inside a loaded file, if it has one."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "encoder"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    return None


AUXILIARY_HEADS = ("ctc_head.", "simple_am_proj.", "simple_lm_proj.")
"""Training-only heads (the CTC head, the pruned loss's trivial joiner) that one model may have and
the next stage's may not: :func:`load_init` leaves them as initialised instead of refusing."""


def load_init(model: nn.Module, path: str | os.PathLike) -> str:
    """Initialises ``model`` (a Transducer) from ``path``.

    Accepted:
      * an xtrans transducer checkpoint (``ckpt_step*.pt``, ``best.pt``, ``average.pt``):
        every weight is loaded; an auxiliary head (:data:`AUXILIARY_HEADS`: the CTC head, the
        pruned loss's ``simple_am_proj``/``simple_lm_proj``) present on only one side is left as is
        (logged), so a stage trained with the pruned loss can start one trained with the full loss;
      * an encoder-only file: a state dict of the encoder (keys optionally prefixed
        ``encoder.``), plain or under ``"model"``/``"state_dict"``/``"encoder"``: only the
        encoder is loaded, predictor and joiner stay randomly initialised;
      * a Hugging Face wav2vec2 directory or a fairseq checkpoint, through
        :func:`xtrans.models.wav2vec2.load_pretrained`: the encoder is loaded.

    The encoder's mask embedding (``encoder.mask_emb``, present only with feature masking,
    ``mask_prob > 0``) may be on one side only: a file from before feature masking or from a stage
    without it keeps the model's initialisation; a file's embedding that the model has no place
    for is dropped (both logged; :func:`~xtrans.models.wav2vec2.names.fit_optional_weights`).

    Returns:
        ``"transducer"`` or ``"encoder"``: what was loaded.

    Raises:
        CheckpointError: when nothing in ``path`` fits the model (naming the first mismatch).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "--init file or directory does not exist")
    sd = None
    if path.is_file():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # e.g. a fairseq checkpoint with pickled objects
            obj = None
        sd = _state_dict_of(obj)
    if sd is None:
        from xtrans.models.wav2vec2 import load_pretrained
        try:
            # with the model's time masking, so that the file's mask embedding comes along
            encoder = load_pretrained(str(path), mask_prob=getattr(model.encoder, "mask_prob", 0.0))
        except Exception as err:
            raise CheckpointError(path, f"neither an xtrans checkpoint, an encoder state dict nor a "
                                        f"pretrained wav2vec2 model ({type(err).__name__}: {err})") from None
        sd = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    if any(k.startswith(("joiner.", "predictor.")) for k in sd):
        own = model.state_dict()
        sd = fit_optional_weights(own, sd, f"init {path}", prefix="encoder.")
        for name in sorted(set(sd) | set(own)):
            if name.startswith(AUXILIARY_HEADS) and (name in sd) != (name in own):
                logger.info("init %s: auxiliary head %s only on one side; left as initialised", path, name)
                sd.pop(name, None)
        missing = [k for k in own if k not in sd and not k.startswith(AUXILIARY_HEADS)]
        unexpected = [k for k in sd if k not in own]
        if missing or unexpected:
            raise CheckpointError(path, f"does not fit the model: missing {missing[:3]}, "
                                        f"unexpected {unexpected[:3]}")
        _check_shapes(path, own, sd)
        model.load_state_dict(sd, strict=False)
        logger.info("initialised the whole transducer from %s", path)
        return "transducer"
    enc_sd = {k[len("encoder."):] if k.startswith("encoder.") else k: v for k, v in sd.items()}
    own = model.encoder.state_dict()
    enc_sd = fit_optional_weights(own, enc_sd, f"init {path}")
    missing = [k for k in own if k not in enc_sd]
    unexpected = [k for k in enc_sd if k not in own]
    if missing or unexpected:
        raise CheckpointError(path, f"does not fit the encoder: missing {missing[:3]}, "
                                    f"unexpected {unexpected[:3]}")
    _check_shapes(path, own, enc_sd)
    model.encoder.load_state_dict(enc_sd)
    logger.info("initialised the encoder from %s (predictor and joiner random)", path)
    return "encoder"


def _check_shapes(path, own: Dict[str, torch.Tensor], sd: Dict[str, torch.Tensor]) -> None:
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(path, f"{k} has shape {tuple(v.shape)}, the model expects "
                                        f"{tuple(own[k].shape)} (different architecture or vocabulary)")


# --------------------------------------------------------------------------- averaging

def average_state_dicts(state_dicts: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Element-wise mean of model state dicts (float tensors averaged in float64; others from the last).

    Raises:
        ValueError: for an empty list or mismatching keys.
    """
    if not state_dicts:
        raise ValueError("state_dicts: expected at least one")
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], 1):
        if list(sd) != keys:
            raise ValueError(f"state_dicts[{i}]: keys differ from state_dicts[0]")
    out = {}
    for k in keys:
        ref = state_dicts[-1][k]
        if ref.is_floating_point():
            acc = torch.zeros_like(ref, dtype=torch.float64)
            for sd in state_dicts:
                acc += sd[k].to(torch.float64)
            out[k] = (acc / len(state_dicts)).to(ref.dtype)
        else:
            out[k] = ref.clone()
    return out


def average_checkpoints(paths: List[str | os.PathLike], out: str | os.PathLike) -> Dict[str, Any]:
    """Averages the models of ``paths`` into ``out`` (usable with ``--init`` and for decoding).

    Returns:
        the written checkpoint dict (``model``, ``arch``, ``config``, ``averaged_from``).
    """
    ckpts = [load_checkpoint(p) for p in paths]
    arch = read_arch(ckpts[-1], paths[-1]).to_dict() if ckpts[-1].get("arch") else None  # any format -> today's
    result = {"version": CHECKPOINT_VERSION,
              "model": average_state_dicts([c["model"] for c in ckpts]),
              "arch": arch, "config": ckpts[-1].get("config"),
              "averaged_from": [str(p) for p in paths]}
    atomic_save(result, out)
    logger.info("averaged %d checkpoints into %s", len(paths), out)
    return result


def training_streaming(checkpoint: Union[str, os.PathLike]) -> Tuple[Optional[StreamingConfig], str]:
    """The streaming rule a model was trained under, read from its checkpoint's training config.

    A fixed mask is used as it is; a multi-chunk model (stage 4) is decoded at the configuration its
    dev loss was computed under (``mask.valid_chunk_size``, else its smallest chunk).

    Returns:
        ``(config or None for full attention, where it came from)``; a checkpoint without a
        training config gives full attention.

    Raises:
        CheckpointError: when the checkpoint cannot be read.
        ValueError: when the stored ``mask`` section cannot be read (pass ``--chunk_ms``).
    """
    ckpt = load_checkpoint(checkpoint)
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(config, dict) or not isinstance(config.get("mask"), dict):
        logger.warning("%s stores no training config: decoded with full attention", checkpoint)
        return None, "full attention (no training config in the checkpoint)"
    try:
        mask = from_dict(MaskConfig, config["mask"], source=f"{checkpoint}:config", prefix="mask.")
    except ConfigError as err:
        raise ValueError(f"{checkpoint}: its training mask cannot be read ({err}); give the streaming "
                         "rule with --chunk_ms/--left_ms/--sinks") from None
    if mask.multi_chunk is not None:
        return mask.for_validation(), "training config (multi-chunk: its validation chunk)"
    return mask.fixed(), "training config"
