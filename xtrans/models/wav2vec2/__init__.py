"""wav2vec 2.0 / XLSR encoder: the model, presets and pretrained checkpoint import."""

from xtrans.models.wav2vec2.model import (
    StreamingNotSupportedError,
    Wav2Vec2Encoder,
    conv_output_lengths,
    cumulative_normalize,
    normalize_waveform,
)
from xtrans.models.wav2vec2.presets import preset_kwargs, tiny, wav2vec2_base, xlsr_53
from xtrans.models.wav2vec2.pretrained import CheckpointMismatchError, load_pretrained
from xtrans.models.wav2vec2.safe_pickle import UnsafeCheckpointError

__all__ = [
    "CheckpointMismatchError", "StreamingNotSupportedError", "UnsafeCheckpointError", "Wav2Vec2Encoder",
    "conv_output_lengths", "cumulative_normalize", "load_pretrained", "normalize_waveform", "preset_kwargs", "tiny",
    "wav2vec2_base", "xlsr_53",
]
