"""Installs the xtrans library: streaming transducers on self-supervised pretrained encoders."""

from setuptools import find_packages, setup

setup(
    name="xtrans",
    version="0.1.0",
    description="Streaming RNN-T speech recognition on XLSR / wav2vec 2.0 encoders (XLSR-Transducer)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["xtrans", "xtrans.*"]),
    package_data={"xtrans.serve": ["static/*.html", "static/*.js"]},
    # The base install reads audio and data directories; what it runs comes with the extras (as
    # transformers keeps torch out of its base install):
    #   runtime  decoding an ONNX export without torch: xtrans.onnx, transcribe/decode/serve --onnx,
    #            python -m xtrans.serve.client  (pip install "xtrans[runtime]")
    #   train    the PyTorch stack: training, checkpoints, Speech2Text, --model, export, recipes
    install_requires=[
        "numpy>=1.23",
        "soundfile>=0.12",
        "kaldiio>=2.17",  # ark entries of wav.scp (what prepare_audio writes)
        "tqdm>=4.60",
    ],
    extras_require={
        # sentencepiece: hotwords are spelled with an export's bpe.model when it has one
        "runtime": ["onnxruntime>=1.17", "websockets>=13", "sentencepiece>=0.1.99"],
        "train": [
            # A range any recent CUDA or CPU build satisfies; the Makefile pins the local CPU wheel.
            "torch>=2.1,<3",
            "sentencepiece>=0.1.99",
            "pyyaml>=6.0",
            "typeguard>=4.1",
            "matplotlib>=3.6",
            "tensorboard>=2.12",
            # simulated rooms for reverberation in training and in the robustness table (image method)
            "pyroomacoustics>=0.7",
        ],
        # selenium drives headless Chromium in the live server's browser test
        "dev": ["pytest>=7", "transformers>=4.40", "safetensors>=0.4", "selenium>=4.10"],
        "synth": ["espeakng-loader>=0.2.4"],
        # ONNX export (onnx; onnxscript for torch.onnx.export's default dynamo exporter; with train)
        # and the torch-free runtime xtrans.onnx (onnxruntime)
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17", "onnxscript>=0.1"],
        # the live server python -m xtrans.bin.serve (the asyncio implementation of websockets)
        "serve": ["websockets>=13"],
    },
)
