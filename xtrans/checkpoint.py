"""The checkpoint format and its file I/O, shared by training and inference.

A checkpoint is one ``torch.save`` file of plain types and tensors only (it loads with
``torch.load(weights_only=True)``)::

    {"version": 2, "model": state_dict, "arch": ModelArch.to_dict(), ...}

Training adds ``optimizer``, ``scheduler``, ``scaler``, ``config``, ``train_state``,
``tokenizer`` and ``metrics`` (:mod:`xtrans.train.checkpoint` keeps the run directory: keep-last-k,
best-k, initialisation, averaging). :func:`load_model` rebuilds the transducer of any checkpoint
with :func:`xtrans.models.build_model`, without the pretrained file it started from.

Format 1 (before :class:`~xtrans.models.arch.ModelArch`) had the same keys with ``arch`` the
plain dict of that time; :func:`read_arch` converts it (:func:`~xtrans.models.config.arch_from_v1`).

Writes are atomic: the file is written to ``<name>.tmp``, flushed and ``fsync``-ed, then
``os.replace``-d onto its name and the directory is ``fsync``-ed. A process killed at any
moment leaves either the old file or the new one, never a truncated checkpoint under a real name.
No ``*.tmp`` outlives a save that returns or raises (only a killed process can leave one, which
the next save of that name replaces).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import torch

from xtrans.models.arch import ModelArch
from xtrans.models.config import arch_from_v1, build_model
from xtrans.models.transducer import Transducer

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2
"""The format :func:`model_checkpoint` writes; :func:`read_arch` reads this and every older one."""

DDP_PREFIX = "module."


class CheckpointError(ValueError):
    """A checkpoint or init file cannot be used; ``path`` names it, ``reason`` says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def fsync_dir(path: str | os.PathLike) -> None:
    """``fsync`` of a directory, so that a rename in it survives a crash (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` via a temporary file, ``fsync`` and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (disk full, ...) leaves no half file behind
    fsync_dir(path.parent)


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Writes a small text file atomically (same protocol as :func:`atomic_save`)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """Loads a checkpoint written by :func:`atomic_save` (``weights_only=True``).

    Raises:
        CheckpointError: when the file is missing or unreadable (e.g. truncated).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zipfile, pickle and torch raise various types
        raise CheckpointError(path, f"unreadable checkpoint ({type(err).__name__}: {err})") from None


def model_checkpoint(model: Transducer) -> Dict[str, Any]:
    """The model's part of a checkpoint: ``{"version", "model", "arch"}`` (callers add their own keys).

    Raises:
        ValueError: for a model without :attr:`~xtrans.models.transducer.Transducer.arch` (one
            not made by :func:`xtrans.models.build_model`), which no checkpoint could rebuild.
    """
    if not isinstance(getattr(model, "arch", None), ModelArch):
        raise ValueError(f"model: expected a Transducer made by build_model (with a ModelArch 'arch'), "
                         f"found arch={getattr(model, 'arch', None)!r}")
    return {"version": CHECKPOINT_VERSION, "model": model.state_dict(), "arch": model.arch.to_dict()}


def read_arch(ckpt: Mapping[str, Any], path: str | os.PathLike = "<checkpoint>") -> ModelArch:
    """The :class:`ModelArch` of a loaded checkpoint of any format (format 1 converted).

    Raises:
        CheckpointError: no ``arch``, a format newer than :data:`CHECKPOINT_VERSION`, or an
            ``arch`` that does not type-check (the reason names the field).
    """
    version = ckpt.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(path, f"version: expected a format number >= 1, found {version!r}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(path, f"format {version} is newer than this xtrans reads "
                                    f"(<= {CHECKPOINT_VERSION}); update xtrans")
    if not ckpt.get("arch"):
        raise CheckpointError(path, "no 'arch' (not a transducer checkpoint)")
    try:
        if version == 1:
            return arch_from_v1(ckpt["arch"])
        return ModelArch.from_dict(ckpt["arch"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(path, f"invalid arch (format {version}): {err}") from None


def strip_ddp_prefix(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A state dict saved from ``DistributedDataParallel`` (every key ``module.*``) -> the model's keys."""
    if state_dict and all(k.startswith(DDP_PREFIX) for k in state_dict):
        return {k[len(DDP_PREFIX):]: v for k, v in state_dict.items()}
    return state_dict


def load_model(path: str | os.PathLike, map_location: Any = "cpu") -> Tuple[Transducer, Dict[str, Any]]:
    """Rebuilds the transducer of a checkpoint (any format) and loads its weights.

    Args:
        path: ``best.pt``, ``average.pt``, ``ckpt_step<N>.pt``, or any file with ``model`` and ``arch``.
        map_location: where the checkpoint's tensors are loaded (the model itself is built on CPU).

    Returns:
        ``(model, checkpoint)``: the model in training mode, on CPU, and the loaded checkpoint dict
        (its other entries: tokenizer, config, ...).

    Raises:
        CheckpointError: the file is missing, unreadable, not a transducer checkpoint, its ``arch``
            is invalid, or its weights do not fit its ``arch``.
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt or not ckpt.get("arch"):
        raise CheckpointError(path, "not a transducer checkpoint (expected a dict with 'model' and 'arch')")
    model = build_model(read_arch(ckpt, path))
    try:
        model.load_state_dict(strip_ddp_prefix(ckpt["model"]))
    except RuntimeError as err:
        raise CheckpointError(path, f"weights do not fit its 'arch': {err}") from None
    return model, ckpt


__all__ = ["CHECKPOINT_VERSION", "CheckpointError", "atomic_save", "atomic_write_text", "fsync_dir",
           "load_checkpoint", "load_model", "model_checkpoint", "read_arch", "strip_ddp_prefix"]
