"""Self-supervised speech encoders (wav2vec 2.0 / XLSR / XLS-R / MMS, HuBERT, WavLM, data2vec-audio):
the model, presets and pretrained checkpoint import."""

from xtrans.models.wav2vec2.model import (
    StreamingNotSupportedError,
    Wav2Vec2Encoder,
    conv_output_lengths,
    cumulative_normalize,
    normalize_waveform,
)
from xtrans.models.wav2vec2.presets import (
    data2vec_audio_base,
    data2vec_audio_large,
    hubert_base,
    hubert_large,
    mms_1b,
    mms_300m,
    preset_kwargs,
    tiny,
    wav2vec2_base,
    wavlm_base_plus,
    wavlm_large,
    xls_r_1b,
    xls_r_2b,
    xls_r_300m,
    xlsr_53,
)
from xtrans.models.wav2vec2.pretrained import CheckpointMismatchError, load_pretrained
from xtrans.models.wav2vec2.safe_pickle import UnsafeCheckpointError

__all__ = [
    "CheckpointMismatchError", "StreamingNotSupportedError", "UnsafeCheckpointError", "Wav2Vec2Encoder",
    "conv_output_lengths", "cumulative_normalize", "data2vec_audio_base", "data2vec_audio_large", "hubert_base",
    "hubert_large", "load_pretrained", "mms_1b", "mms_300m", "normalize_waveform", "preset_kwargs", "tiny",
    "wav2vec2_base", "wavlm_base_plus", "wavlm_large", "xls_r_1b", "xls_r_2b", "xls_r_300m", "xlsr_53",
]
