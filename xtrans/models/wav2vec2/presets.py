"""Encoder presets as functions (like torchaudio's ``wav2vec2_base()``): keyword sets + builders.

``*_kwargs()`` give the architecture as a dict (used by configs and checkpoint import); the
functions of the same name without the suffix build the module. Keyword overrides replace
any entry (``xlsr_53(pos_conv="chunk", waveform_norm="cumulative")``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict

from xtrans.models.wav2vec2.model import XLSR_CONV_LAYERS, Wav2Vec2Encoder


def xlsr_53_kwargs() -> Dict[str, Any]:
    """XLSR-53 / XLS-R 300M: layer-norm CNN with bias, 24 pre-LN layers of 1024, 16 heads, FFN 4096."""
    return dict(conv_layers=XLSR_CONV_LAYERS, extractor_mode="layer_norm", conv_bias=True,
                embed_dim=1024, num_layers=24, num_heads=16, ffn_dim=4096, layer_norm_first=True,
                pos_conv_kernel=128, pos_conv_groups=16, waveform_norm="utterance")


def wav2vec2_base_kwargs() -> Dict[str, Any]:
    """wav2vec2-base: group-norm CNN without bias, 12 post-LN layers of 768, 12 heads, FFN 3072."""
    return dict(conv_layers=XLSR_CONV_LAYERS, extractor_mode="group_norm", conv_bias=False,
                embed_dim=768, num_layers=12, num_heads=12, ffn_dim=3072, layer_norm_first=False,
                pos_conv_kernel=128, pos_conv_groups=16, waveform_norm="none")


def tiny_kwargs() -> Dict[str, Any]:
    """A small XLSR-shaped encoder for tests and CPU recipes (same strides, 64 channels, D=96)."""
    conv = tuple((64, k, s) for _, k, s in XLSR_CONV_LAYERS)
    return dict(conv_layers=conv, extractor_mode="layer_norm", conv_bias=True, embed_dim=96,
                num_layers=2, num_heads=4, ffn_dim=192, layer_norm_first=True,
                pos_conv_kernel=128, pos_conv_groups=16, waveform_norm="cumulative")


def mini_kwargs() -> Dict[str, Any]:
    """The from-scratch encoder of the demo recipes (``egs/mini_synth``, ``egs/fsdd``): 1.9M parameters.

    XLSR strides with 64 channels, D=192, 4 pre-LN layers of 4 heads, FFN 768, and the streamable
    settings of the demo's stage confs: ``waveform_norm="cumulative"`` (each sample divided by the
    running mean/variance of the samples so far: invariant to the input level, exact in streaming),
    ``pos_conv="causal"`` with a 32-frame kernel (640 ms of past frames; 128 frames cost 1.6x the
    time per update). The CNN's first layer is normalised per channel with running statistics
    (``cumulative_norm``, streamable without fitting); the demo's confs replace it by ``batch_norm``,
    whose fixed statistics come from fitting the CNN to log-mel filters in recipe stage 4
    (``xtrans.bin.pretrain_frontend``), and freeze the fitted CNN. The demo's measured WERs are in
    ``egs/mini_synth/asr1/run.sh``.
    """
    conv = tuple((64, k, s) for _, k, s in XLSR_CONV_LAYERS)
    return dict(conv_layers=conv, extractor_mode="cumulative_norm", conv_bias=True, embed_dim=192,
                num_layers=4, num_heads=4, ffn_dim=768, layer_norm_first=True,
                pos_conv_kernel=32, pos_conv_groups=16, pos_conv="causal", waveform_norm="cumulative")


PRESETS: Dict[str, Callable[[], Dict[str, Any]]] = {
    "xlsr_53": xlsr_53_kwargs,
    "wav2vec2_base": wav2vec2_base_kwargs,
    "tiny": tiny_kwargs,
    "mini": mini_kwargs,
}


def preset_kwargs(name: str, **overrides: Any) -> Dict[str, Any]:
    """The keyword arguments of preset ``name`` with ``overrides`` applied.

    Raises:
        ValueError: for an unknown preset name or override key.
    """
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, found {name!r}")
    kwargs = PRESETS[name]()

    known = set(inspect.signature(Wav2Vec2Encoder.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"encoder option {unknown[0]!r} is unknown; known options: {sorted(known)}")
    kwargs.update(overrides)
    return kwargs


def xlsr_53(**overrides: Any) -> Wav2Vec2Encoder:
    """XLSR-53 encoder (random weights; see ``load_pretrained`` for the published ones)."""
    return Wav2Vec2Encoder(**preset_kwargs("xlsr_53", **overrides))


def wav2vec2_base(**overrides: Any) -> Wav2Vec2Encoder:
    """wav2vec2-base encoder (random weights)."""
    return Wav2Vec2Encoder(**preset_kwargs("wav2vec2_base", **overrides))


def mini(**overrides: Any) -> Wav2Vec2Encoder:
    """The demo recipes' from-scratch streamable encoder (random weights; see :func:`mini_kwargs`)."""
    return Wav2Vec2Encoder(**preset_kwargs("mini", **overrides))


def tiny(**overrides: Any) -> Wav2Vec2Encoder:
    """Tiny XLSR-shaped encoder (random weights)."""
    return Wav2Vec2Encoder(**preset_kwargs("tiny", **overrides))
