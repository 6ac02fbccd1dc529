"""Encoder presets as functions (like torchaudio's ``wav2vec2_base()``): keyword sets + builders.

``*_kwargs()`` give the architecture as a dict (used by configs and checkpoint import); the
functions of the same name without the suffix build the module. Keyword overrides replace
any entry (``xlsr_53(pos_conv="chunk", waveform_norm="cumulative")``).

The published self-supervised encoders, with the shapes of their released checkpoints (random
weights here; :func:`~xtrans.models.wav2vec2.load_pretrained` brings the published ones):

=======================  =====  ====  ====  =====  ===========================================
preset                   D      N     H     FFN    checkpoint
=======================  =====  ====  ====  =====  ===========================================
``xlsr_53``              1024   24    16    4096   facebook/wav2vec2-large-xlsr-53
``xls_r_300m``           1024   24    16    4096   facebook/wav2vec2-xls-r-300m
``xls_r_1b``             1280   48    16    5120   facebook/wav2vec2-xls-r-1b
``xls_r_2b``             1920   48    16    7680   facebook/wav2vec2-xls-r-2b
``mms_300m``             1024   24    16    4096   facebook/mms-300m
``mms_1b``               1280   48    16    5120   facebook/mms-1b
``hubert_base``          768    12    12    3072   facebook/hubert-base-ls960 (group norm, post-LN)
``hubert_large``         1024   24    16    4096   facebook/hubert-large-ll60k
``wavlm_base_plus``      768    12    12    3072   microsoft/wavlm-base-plus (group norm, post-LN)
``wavlm_large``          1024   24    16    4096   microsoft/wavlm-large
``data2vec_audio_base``  768    12    12    3072   facebook/data2vec-audio-base
``data2vec_audio_large`` 1024   24    16    4096   facebook/data2vec-audio-large
=======================  =====  ====  ====  =====  ===========================================

Every large model has the layer-norm CNN (streamable); the base models of HuBERT and WavLM
normalise the first conv over the utterance (``group_norm``) and stream only with another front
end. ``waveform_norm`` is what each model was trained with (``utterance`` where the released
feature extractor normalises), to be replaced by ``cumulative`` for streaming.
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


def _xls_r(embed_dim: int, num_layers: int, ffn_dim: int) -> Dict[str, Any]:
    """XLS-R / MMS: the XLSR-53 layout (layer-norm CNN with bias, pre-LN) at another size, 16 heads."""
    return dict(xlsr_53_kwargs(), embed_dim=embed_dim, num_layers=num_layers, ffn_dim=ffn_dim)


def xls_r_300m_kwargs() -> Dict[str, Any]:
    """XLS-R 300M (Babu et al., 2021; 436k hours, 128 languages): the XLSR-53 shape."""
    return _xls_r(1024, 24, 4096)


def xls_r_1b_kwargs() -> Dict[str, Any]:
    """XLS-R 1B: 48 pre-LN layers of 1280, 16 heads, FFN 5120."""
    return _xls_r(1280, 48, 5120)


def xls_r_2b_kwargs() -> Dict[str, Any]:
    """XLS-R 2B: 48 pre-LN layers of 1920, 16 heads, FFN 7680."""
    return _xls_r(1920, 48, 7680)


def mms_300m_kwargs() -> Dict[str, Any]:
    """MMS 300M (Pratap et al., 2023; 1,400 languages): the XLS-R 300M shape."""
    return _xls_r(1024, 24, 4096)


def mms_1b_kwargs() -> Dict[str, Any]:
    """MMS 1B: the XLS-R 1B shape."""
    return _xls_r(1280, 48, 5120)


def hubert_base_kwargs() -> Dict[str, Any]:
    """HuBERT base (Hsu et al., 2021): the wav2vec2-base layout (group-norm CNN, post-LN)."""
    return wav2vec2_base_kwargs()


def hubert_large_kwargs() -> Dict[str, Any]:
    """HuBERT large: the XLSR-53 layout (layer-norm CNN with bias, 24 pre-LN layers of 1024, input
    normalised; facebook/hubert-large-ll60k)."""
    return xlsr_53_kwargs()


def wavlm_base_plus_kwargs() -> Dict[str, Any]:
    """WavLM base+ (Chen et al., 2022): wav2vec2-base layout with the gated relative position bias
    (320 buckets, max distance 800)."""
    return dict(wav2vec2_base_kwargs(), rel_pos_buckets=320, rel_pos_max_distance=800, rel_pos_gated=True)


def wavlm_large_kwargs() -> Dict[str, Any]:
    """WavLM large: layer-norm CNN *without* bias, 24 pre-LN layers of 1024, and the gated relative
    position bias (microsoft/wavlm-large)."""
    return dict(xlsr_53_kwargs(), conv_bias=False, rel_pos_buckets=320, rel_pos_max_distance=800,
                rel_pos_gated=True)


def data2vec_audio_base_kwargs() -> Dict[str, Any]:
    """data2vec-audio base (Baevski et al., 2022): layer-norm CNN without bias, 12 post-LN layers
    of 768, and a stack of 5 positional convolutions (kernel 19, 16 groups, LayerNorm, GELU)."""
    return dict(conv_layers=XLSR_CONV_LAYERS, extractor_mode="layer_norm", conv_bias=False,
                embed_dim=768, num_layers=12, num_heads=12, ffn_dim=3072, layer_norm_first=False,
                pos_conv_kernel=19, pos_conv_groups=16, pos_conv_layers=5, pos_conv_norm="layer",
                waveform_norm="utterance")


def data2vec_audio_large_kwargs() -> Dict[str, Any]:
    """data2vec-audio large: the base layout with 24 post-LN layers of 1024, 16 heads, FFN 4096."""
    return dict(data2vec_audio_base_kwargs(), embed_dim=1024, num_layers=24, num_heads=16, ffn_dim=4096)


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
    "xls_r_300m": xls_r_300m_kwargs,
    "xls_r_1b": xls_r_1b_kwargs,
    "xls_r_2b": xls_r_2b_kwargs,
    "mms_300m": mms_300m_kwargs,
    "mms_1b": mms_1b_kwargs,
    "hubert_base": hubert_base_kwargs,
    "hubert_large": hubert_large_kwargs,
    "wavlm_base_plus": wavlm_base_plus_kwargs,
    "wavlm_large": wavlm_large_kwargs,
    "data2vec_audio_base": data2vec_audio_base_kwargs,
    "data2vec_audio_large": data2vec_audio_large_kwargs,
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



def xls_r_300m(**overrides: Any) -> Wav2Vec2Encoder:
    """XLS-R 300M encoder (random weights; shape in :func:`xls_r_300m_kwargs`)."""
    return Wav2Vec2Encoder(**preset_kwargs("xls_r_300m", **overrides))


def xls_r_1b(**overrides: Any) -> Wav2Vec2Encoder:
    """XLS-R 1B encoder (random weights; shape in :func:`xls_r_1b_kwargs`)."""
    return Wav2Vec2Encoder(**preset_kwargs("xls_r_1b", **overrides))


def xls_r_2b(**overrides: Any) -> Wav2Vec2Encoder:
    """XLS-R 2B encoder (random weights; shape in :func:`xls_r_2b_kwargs`)."""
    return Wav2Vec2Encoder(**preset_kwargs("xls_r_2b", **overrides))


def mms_300m(**overrides: Any) -> Wav2Vec2Encoder:
    """MMS 300M encoder (random weights; shape in :func:`mms_300m_kwargs`)."""
    return Wav2Vec2Encoder(**preset_kwargs("mms_300m", **overrides))


def mms_1b(**overrides: Any) -> Wav2Vec2Encoder:
    """MMS 1B encoder (random weights; shape in :func:`mms_1b_kwargs`)."""
    return Wav2Vec2Encoder(**preset_kwargs("mms_1b", **overrides))


def hubert_base(**overrides: Any) -> Wav2Vec2Encoder:
    """HuBERT base encoder (random weights; shape in :func:`hubert_base_kwargs`)."""
    return Wav2Vec2Encoder(**preset_kwargs("hubert_base", **overrides))


def hubert_large(**overrides: Any) -> Wav2Vec2Encoder:
    """HuBERT large encoder (random weights; shape in :func:`hubert_large_kwargs`)."""
    return Wav2Vec2Encoder(**preset_kwargs("hubert_large", **overrides))


def wavlm_base_plus(**overrides: Any) -> Wav2Vec2Encoder:
    """WavLM base+ encoder (random weights; shape in :func:`wavlm_base_plus_kwargs`)."""
    return Wav2Vec2Encoder(**preset_kwargs("wavlm_base_plus", **overrides))


def wavlm_large(**overrides: Any) -> Wav2Vec2Encoder:
    """WavLM large encoder (random weights; shape in :func:`wavlm_large_kwargs`)."""
    return Wav2Vec2Encoder(**preset_kwargs("wavlm_large", **overrides))


def data2vec_audio_base(**overrides: Any) -> Wav2Vec2Encoder:
    """data2vec-audio base encoder (random weights; shape in :func:`data2vec_audio_base_kwargs`)."""
    return Wav2Vec2Encoder(**preset_kwargs("data2vec_audio_base", **overrides))


def data2vec_audio_large(**overrides: Any) -> Wav2Vec2Encoder:
    """data2vec-audio large encoder (random weights; shape in :func:`data2vec_audio_large_kwargs`)."""
    return Wav2Vec2Encoder(**preset_kwargs("data2vec_audio_large", **overrides))
