"""Test fixtures that build tiny models and tiny data (imported by the test suite and benchmarks).

Modules:
    pretrained_fixtures: random Hugging Face wav2vec2 models, fake fairseq checkpoints
        (dict / Namespace / omegaconf DictConfig configs), hostile pickles.
    crash: runs a command-line module and SIGKILLs it half-way through a checkpoint write or
        right after a checkpoint (``python -m xtrans.testing.crash``), for the crash tests.
    speech_fixtures: isolated digits spoken by eSpeak NG voices, 8 kHz, in the Free Spoken Digit
        Dataset's layout (the tests' own speech; the ``spoken_digits`` fixture).
    serve_fixtures: digit strings joined from such a folder, and Speech2Text references.
    train_fixtures: tiny tone corpora, tokenizers, configs and decodable checkpoints.
    data_fixtures: a data directory with one problem per utterance.
    runtime_fixtures: an ONNX export, test signals and the PyTorch results on them for the
        torch-free runtime's tests (``test_runtime/``; ``python -m xtrans.testing.runtime_fixtures``).
    torch_free: runs a command-line module where ``import torch`` fails
        (``python -m xtrans.testing.torch_free``).
"""
