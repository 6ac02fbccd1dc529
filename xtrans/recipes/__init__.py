"""Corpus recipes' Python side: downloads and data preparation into Kaldi data directories.

Modules:
    download: resumable HTTP(S) download with md5/sha256 verification, safe tar extraction.
    librispeech: the LibriSpeech parts, their published checksums, and data preparation.

Command lines: ``python -m xtrans.bin.download`` and ``python -m xtrans.bin.prepare_librispeech``.
"""
