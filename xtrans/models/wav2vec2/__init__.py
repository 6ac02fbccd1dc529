"""wav2vec 2.0 / XLSR encoder: the model, presets and pretrained checkpoint import."""

from xtrans.models.wav2vec2.model import (
    StreamingNotSupportedError,
    Wav2Vec2Encoder,
    conv_output_lengths,
    normalize_waveform,
)
from xtrans.models.wav2vec2.presets import preset_kwargs, tiny, wav2vec2_base, xlsr_53

__all__ = [
    "StreamingNotSupportedError", "Wav2Vec2Encoder", "conv_output_lengths", "normalize_waveform",
    "preset_kwargs", "tiny", "wav2vec2_base", "xlsr_53", "load_pretrained",
]


def load_pretrained(path, **overrides):
    """Loads a Hugging Face directory or a fairseq checkpoint; see :mod:`xtrans.models.wav2vec2.pretrained`."""
    from xtrans.models.wav2vec2.pretrained import load_pretrained as _load

    return _load(path, **overrides)
