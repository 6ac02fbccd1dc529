"""Synthetic speech for demo corpora and tests: eSpeak NG through ``espeakng-loader``."""

from xtrans.synth.espeak import (
    ENGLISH_LANGUAGES,
    SAMPLE_RATE,
    EspeakError,
    Variation,
    Voice,
    english_voices,
    get_engine,
    list_variants,
    render_utterance,
)

__all__ = [
    "ENGLISH_LANGUAGES", "SAMPLE_RATE", "EspeakError", "Variation", "Voice", "english_voices",
    "get_engine", "list_variants", "render_utterance",
]
