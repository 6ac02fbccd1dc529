"""Files of a pretraining run, and reading an encoder out of any file the project writes or imports.

A pretraining checkpoint (``ckpt_step<N>.pt``, written with :func:`xtrans.checkpoint.atomic_save`,
loadable with ``torch.load(weights_only=True)``) is an encoder-only file in the sense of
``python -m xtrans.bin.import_encoder`` plus what resumes the run:

===============  ============================================================================
key              value
===============  ============================================================================
``format``       ``"xtrans-ssl"``; ``version``: :data:`SSL_CHECKPOINT_VERSION`
``encoder``      the encoder's ``state_dict()`` (mask embedding ``mask_emb`` included)
``arch``         ``EncoderArch.to_dict()``: every keyword argument of the encoder
``source``       where the encoder started (a preset and seed, or a file)
``head``         the prediction head's weights (``final_proj.*``, ``label_embs``)
``targets``      :meth:`~xtrans.ssl.targets.FrameTargets.state_dict`: the features and codebook
``config``       the run's :class:`~xtrans.ssl.config.PretrainConfig` as a plain dict
``optimizer``    ``scheduler``: their ``state_dict()``
``train_state``  :class:`~xtrans.train.state.TrainState` (step, epoch, batch in the epoch,
                 sampler, random generators)
``metrics``      the train (and dev) loss at this step
===============  ============================================================================

Because ``encoder`` and ``arch`` are where ``import_encoder`` puts them, a checkpoint (and the
final ``encoder.pt``, the same without the training keys) can be given to ``python -m
xtrans.bin.train --init``, to ``pretrain_frontend --encoder`` and to ``--features_from`` of a
second iteration.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Union

import torch

from xtrans.checkpoint import atomic_save
from xtrans.models.arch import encoder_arch
from xtrans.models.config import encoder_defaults
from xtrans.models.wav2vec2 import Wav2Vec2Encoder, load_pretrained

logger = logging.getLogger(__name__)

__all__ = ["SSL_CHECKPOINT_FORMAT", "SSL_CHECKPOINT_VERSION", "encoder_from_file_contents", "load_encoder",
           "save_encoder_file"]

SSL_CHECKPOINT_FORMAT = "xtrans-ssl"
SSL_CHECKPOINT_VERSION = 1

PathLike = Union[str, os.PathLike]


def encoder_from_file_contents(obj: Mapping[str, Any], name: str = "encoder file") -> Wav2Vec2Encoder:
    """The encoder of an ``{"encoder": state dict, "arch": encoder options, ...}`` mapping.

    Files of older versions hold only the options known then: the others take the encoder's defaults.
    """
    arch = encoder_arch({**encoder_defaults(), **obj["arch"]}, f"{name}: arch")
    encoder = Wav2Vec2Encoder(**arch.kwargs())
    encoder.load_state_dict(obj["encoder"])
    return encoder


def load_encoder(path: PathLike) -> Wav2Vec2Encoder:
    """The encoder of ``path``, in evaluation mode on the CPU.

    Accepted: a pretraining checkpoint or ``encoder.pt`` of this package, an encoder-only file of
    ``import_encoder`` (``{"encoder", "arch"}``), a transducer checkpoint of ``xtrans.bin.train``
    (its encoder), or anything :func:`~xtrans.models.wav2vec2.load_pretrained` reads (a Hugging
    Face directory, a fairseq or unilm ``.pt``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a file of none of these kinds.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path: {path} does not exist (expected an encoder file, a checkpoint or a "
                                "Hugging Face directory)")
    if path.is_dir() or path.suffix in (".safetensors", ".bin", ".json"):
        return load_pretrained(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a fairseq checkpoint holds pickled objects: its own reader is restricted
        return load_pretrained(path)
    if isinstance(obj, Mapping) and {"encoder", "arch"} <= set(obj):
        return encoder_from_file_contents(obj, str(path)).eval()
    if isinstance(obj, Mapping) and {"model", "arch"} <= set(obj):
        from xtrans.checkpoint import load_model

        return load_model(path)[0].encoder.eval()
    found = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(f"path: {path} holds no encoder (expected 'encoder' and 'arch', or a transducer's "
                     f"'model' and 'arch'), found {found}")


def save_encoder_file(encoder: Wav2Vec2Encoder, path: PathLike, source: str, **extra: Any) -> Path:
    """Writes ``{"encoder", "arch", "source", **extra}`` atomically (the format of ``import_encoder``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"encoder": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
                 "arch": encoder.arch.to_dict(), "source": source, **extra}, path)
    return path
