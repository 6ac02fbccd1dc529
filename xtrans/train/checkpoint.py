"""Checkpoints: atomic save, keep-last-k, best-k, initialisation and averaging.

A training checkpoint is one ``torch.save`` file holding plain types and tensors only (it loads
with ``torch.load(weights_only=True)``)::

    {"version": 1, "model": state_dict, "arch": Transducer.arch, "optimizer": ..., "scheduler": ...,
     "scaler": ... | None, "config": to_dict(TrainConfig), "train_state": TrainState.state_dict()}

Files in ``<outdir>``: ``ckpt_step<N>.pt`` (every ``save_interval_updates`` and at epoch ends),
``latest.txt`` (name of the newest complete one), ``best.pt`` (hard link or copy of the best by
dev loss or WER), ``average.pt`` (see :func:`average_state_dicts`).

Writes are atomic: the file is written to ``<name>.tmp``, flushed and ``fsync``-ed, then
``os.replace``-d onto its name and the directory is ``fsync``-ed. A process killed at any
moment leaves either the old file or the new one, never a truncated checkpoint under a real name.
No ``*.tmp`` outlives a save that returns or raises (only a killed process can leave one, which
the next save of that name replaces).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import torch
from torch import nn

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
_STEP_RE = re.compile(r"^ckpt_step(\d+)\.pt$")

KILL_IN_SAVE_ENV = "XTRANS_TEST_SIGKILL_IN_SAVE"
"""Test hook: ``N`` SIGKILLs this process half-way through writing its N-th checkpoint file."""

_saves_started = 0


class CheckpointError(ValueError):
    """A checkpoint or init file cannot be used; ``path`` names it, ``reason`` says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class _KillHalfway:
    """File wrapper for the test hook: SIGKILLs the process after ``limit`` bytes reached disk."""

    def __init__(self, f, limit: int):
        self.f, self.limit, self.written = f, limit, 0

    def write(self, data) -> int:
        n = self.f.write(data)
        self.written += n
        if self.written >= self.limit:
            self.f.flush()
            os.fsync(self.f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return n

    def flush(self) -> None:
        self.f.flush()


def _fsync_dir(path: Path) -> None:
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
    global _saves_started
    _saves_started += 1
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    kill_at = os.environ.get(KILL_IN_SAVE_ENV)
    try:
        with open(tmp, "wb") as f:
            if kill_at is not None and int(kill_at) == _saves_started:
                torch.save(obj, _KillHalfway(f, limit=4096))
            else:
                torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (disk full, ...) leaves no half file behind
    _fsync_dir(path.parent)


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
    _fsync_dir(path.parent)


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
    _fsync_dir(dst.parent)


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
            encoder = load_pretrained(str(path))
        except Exception as err:
            raise CheckpointError(path, f"neither an xtrans checkpoint, an encoder state dict nor a "
                                        f"pretrained wav2vec2 model ({type(err).__name__}: {err})") from None
        sd = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    if any(k.startswith(("joiner.", "predictor.")) for k in sd):
        own = model.state_dict()
        sd = dict(sd)
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
    result = {"version": CHECKPOINT_VERSION,
              "model": average_state_dicts([c["model"] for c in ckpts]),
              "arch": ckpts[-1].get("arch"), "config": ckpts[-1].get("config"),
              "averaged_from": [str(p) for p in paths]}
    atomic_save(result, out)
    logger.info("averaged %d checkpoints into %s", len(paths), out)
    return result
