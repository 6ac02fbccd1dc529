"""Training augmentation: a pipeline of waveform transforms configured per stage (``data.augment``).

- :mod:`~xtrans.data.augment.basic`: speed perturbation, time masks, gain;
- :mod:`~xtrans.data.augment.mix`: noise at an SNR measured over the speech's active frames;
- :mod:`~xtrans.data.augment.generated`: non-stationary noise families for recipes without a noise corpus;
- :mod:`~xtrans.data.augment.reverb`: room impulse responses, listed or simulated;
- :mod:`~xtrans.data.augment.channel`: microphone colouring, telephone band, lossy codecs;
- :mod:`~xtrans.data.augment.pipeline`: the ordered, seeded list of entries a config describes.

Feature masking (wav2vec 2.0's time and channel masks with a learned mask embedding) lives in the
encoder, as it acts on its features (``model.encoder.mask_prob`` etc.).
"""

from xtrans.data.augment.basic import apply_gain, speed_perturb, time_mask
from xtrans.data.augment.channel import codec_roundtrip, mu_law, random_eq, telephone
from xtrans.data.augment.generated import FAMILIES, HELD_OUT_FAMILIES, TRAIN_FAMILIES, generate_noise
from xtrans.data.augment.mix import active_power, fit_length, limit_peak, measured_snr, mix_at_snr, scale_to_snr
from xtrans.data.augment.pipeline import (KINDS, AugmentContext, Pipeline, babble_mix, legacy_entries, parse_entry,
                                          read_scp)
from xtrans.data.augment.reverb import align_rir, reverberate, room_bank, rt60_from_rir, simulate_rir

__all__ = [
    "FAMILIES", "HELD_OUT_FAMILIES", "KINDS", "TRAIN_FAMILIES", "AugmentContext", "Pipeline", "active_power",
    "align_rir", "apply_gain", "babble_mix", "codec_roundtrip", "fit_length", "generate_noise", "legacy_entries",
    "limit_peak", "measured_snr", "mix_at_snr", "mu_law", "parse_entry", "random_eq", "read_scp", "reverberate",
    "room_bank", "rt60_from_rir", "scale_to_snr", "simulate_rir", "speed_perturb", "telephone", "time_mask",
]
