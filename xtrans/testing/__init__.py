"""Test fixtures that build tiny models and tiny data (imported by the test suite and benchmarks).

Modules:
    pretrained_fixtures: random Hugging Face wav2vec2 models, fake fairseq checkpoints
        (dict / Namespace / omegaconf DictConfig configs), hostile pickles.
    crash: runs a command-line module and SIGKILLs it half-way through a checkpoint write or
        right after a checkpoint (``python -m xtrans.testing.crash``), for the crash tests.
"""
