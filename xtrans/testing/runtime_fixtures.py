"""An ONNX export and the PyTorch results its torch-free runtime must reproduce (``test_runtime/``).

The runtime's tests also run where torch is not installed (CI installs ``xtrans[runtime]`` into a
second environment), so what needs torch is made beforehand, in the main environment::

    python -m xtrans.testing.runtime_fixtures DIR        # needs torch, onnx and eSpeak NG (make install)

writes into ``DIR``:

=================== ==========================================================================
``onnx/``           ``python -m xtrans.bin.export_onnx`` of a tiny untrained decoding checkpoint
                    (:func:`~xtrans.testing.train_fixtures.save_decoding_checkpoint`, with the
                    demo's 64-channel CNN, whose onnxruntime convolutions on 2 threads give
                    results that depend on the batch), chunk 320 ms, left 640 ms, 2 sinks; also
                    its int8 encoder ``encoder.int8.onnx`` (``config.json`` names the float one)
``data/``           a Kaldi data directory (``wav.scp`` relative to it, ``text``) of the signals:
``data/audio/``     spoken digit strings (:mod:`xtrans.testing.speech_fixtures`) as 16-bit WAV,
                    half at 8 kHz and half at 16 kHz
``refs.json``       per search (``greedy``, ``beam``) and utterance, the ``tokens`` and
                    ``timestamps`` (s) of :meth:`Speech2Text.stream() <xtrans.inference.Speech2Text.stream>`
                    of the checkpoint under the export's rule on the whole file, and their ``text``
                    as the export's ``tokens.txt`` spells it
=================== ==========================================================================

Writing checks that :class:`~xtrans.onnx.OnnxSpeech2Text` gives those results here too, so the
references are reachable. :func:`load_runtime_refs` reads a directory back without torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import soundfile

REFS_FILE = "refs.json"
SEARCHES = ("greedy", "beam")
RULE = {"chunk_ms": 320.0, "left_ms": 640.0, "sinks": 2}
"""The export's streaming rule."""
SIGNALS = (  # (utterance, digits, seed of the draw, rate)
    ("digits3_8k", 3, 70, 8000),
    ("digits4_16k", 4, 71, 16000),
    ("digits4_8k", 4, 72, 8000),
    ("digits5_16k", 5, 73, 16000),
)
SENTENCES = ["one two three", "four five six", "seven eight nine", "zero oh"]
"""What the checkpoint's tokenizer is trained on."""


@dataclass(frozen=True)
class RuntimeRefs:
    """A directory of :func:`write_runtime_refs`, read back.

    Attributes:
        root: the directory.
        onnx: the export directory.
        data: the Kaldi data directory of the signals.
        audio: utterance id -> its WAV file, in ``wav.scp`` order.
        results: search -> utterance id -> ``{"text", "tokens", "timestamps"}``.
    """

    root: Path
    onnx: Path
    data: Path
    audio: Dict[str, Path]
    results: Dict[str, Dict[str, Dict[str, Any]]]

    def samples(self, utt: str):
        """The utterance's samples ``(S,)`` float32 (16-bit values / 32768) and rate."""
        x, rate = soundfile.read(self.audio[utt], dtype="float32")
        return x, rate


def load_runtime_refs(root: Union[str, os.PathLike]) -> RuntimeRefs:
    """Reads a directory written by :func:`write_runtime_refs` (no torch needed).

    Raises:
        FileNotFoundError: when ``root`` is not such a directory (it says how to make one).
    """
    root = Path(root)
    if not (root / REFS_FILE).is_file():
        raise FileNotFoundError(f"{root / REFS_FILE} does not exist: make the directory with "
                                f"python -m xtrans.testing.runtime_fixtures {root} (where torch is installed)")
    results = json.loads((root / REFS_FILE).read_text(encoding="utf-8"))
    audio = {}
    for line in (root / "data" / "wav.scp").read_text(encoding="utf-8").splitlines():
        utt, path = line.split(maxsplit=1)
        audio[utt] = root / "data" / path
    return RuntimeRefs(root, root / "onnx", root / "data", audio, {s: results[s] for s in SEARCHES})


def _result(transcription) -> Dict[str, Any]:
    return {"text": transcription.text, "tokens": [int(t) for t in transcription.tokens],
            "timestamps": [round(float(t), 6) for t in transcription.timestamps]}


def write_runtime_refs(root: Union[str, os.PathLike], spoken_digits: Optional[Path] = None) -> RuntimeRefs:
    """Writes the directory of the module docstring into ``root`` (created) and returns it, read back.

    Args:
        root: the output directory.
        spoken_digits: a folder of :func:`~xtrans.testing.speech_fixtures.write_spoken_digits`
            (default: synthesised into a temporary folder here).

    Raises:
        RuntimeError: when the export or the ONNX runtime does not give the PyTorch results here.
    """
    from xtrans.bin.export_onnx import main as export_main
    from xtrans.data.kaldi_dir import DataDir, write_data_dir
    from xtrans.data.resample import resample
    from xtrans.export.directory import INT8_ENCODER, quantize_int8
    from xtrans.inference import Speech2Text
    from xtrans.onnx import OnnxSpeech2Text
    from xtrans.testing.serve_fixtures import digit_string, stream_reference, to_s16
    from xtrans.testing.speech_fixtures import write_spoken_digits
    from xtrans.testing.train_fixtures import save_decoding_checkpoint

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        digits = spoken_digits if spoken_digits is not None else write_spoken_digits(Path(tmp) / "digits")
        wav_scp = {}
        (root / "data" / "audio").mkdir(parents=True, exist_ok=True)
        for utt, num_digits, seed, rate in SIGNALS:
            x = digit_string(digits, num_digits, seed=seed)
            if rate != 8000:
                x = to_s16(np.asarray(resample(x, 8000, rate)))
            soundfile.write(root / "data" / "audio" / f"{utt}.wav", x, rate, subtype="PCM_16")
            wav_scp[utt] = f"audio/{utt}.wav"
        ckpt = save_decoding_checkpoint(Path(tmp) / "run", SENTENCES, seed=2, waveform_norm="cumulative",
                                        conv_channels=64)  # seed 2: 3-15 tokens per second, not one per frame
        status = export_main(["--model", str(ckpt), "--outdir", str(root / "onnx"),
                              "--chunk-ms", str(RULE["chunk_ms"]), "--left-ms", str(RULE["left_ms"]),
                              "--sinks", str(RULE["sinks"])])
        if status != 0:
            raise RuntimeError(f"exporting {ckpt} to {root / 'onnx'} failed (exit status {status})")
        quantize_int8(root / "onnx" / "encoder.onnx", root / "onnx" / INT8_ENCODER)  # beside it; config.json keeps fp32
        results: Dict[str, Dict[str, Dict[str, Any]]] = {}
        for search in SEARCHES:
            s2t = Speech2Text.from_checkpoint(ckpt, search=search, **RULE)
            onnx = OnnxSpeech2Text(root / "onnx", search=search, num_threads=1)
            results[search] = {}
            for utt, *_ in SIGNALS:
                x, rate = soundfile.read(root / "data" / wav_scp[utt], dtype="float32")
                ref, got = _result(stream_reference(s2t, x, rate)), _result(stream_reference(onnx, x, rate))
                if (got["tokens"], got["timestamps"]) != (ref["tokens"], ref["timestamps"]):
                    raise RuntimeError(f"{utt} ({search}): the export decodes {got}, PyTorch {ref}")
                results[search][utt] = got  # the text as tokens.txt spells it (sentencepiece writes <unk> as ⁇)
    text = {utt: results["greedy"][utt]["text"] for utt, *_ in SIGNALS}
    write_data_dir(DataDir(wav_scp=wav_scp, text=text), root / "data")
    (root / REFS_FILE).write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return load_runtime_refs(root)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xtrans.testing.runtime_fixtures",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", help="directory to write (export, data, refs.json)")
    args = parser.parse_args(argv)
    refs = write_runtime_refs(args.outdir)
    summary: List[str] = [f"{utt}: {refs.results['greedy'][utt]['text']!r}" for utt in refs.audio]
    print(f"wrote {refs.root}: {refs.onnx.name}/, {refs.data.name}/ ({len(refs.audio)} utterances), {REFS_FILE}\n  "
          + "\n  ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
