"""OnnxSpeech2Text on the export of xtrans.testing.runtime_fixtures gives the PyTorch recognizer's
tokens, timestamps and text, fed in pieces of any size at 8 and 16 kHz (greedy and beam)."""

import random

import pytest

from xtrans.onnx import OnnxSpeech2Text
from xtrans.testing.runtime_fixtures import SEARCHES


@pytest.mark.parametrize("search", SEARCHES)
def test_streaming_equals_pytorch(runtime_refs, search):
    s2t = OnnxSpeech2Text(runtime_refs.onnx, search=search, num_threads=1)
    rng = random.Random(0)
    for utt in runtime_refs.audio:
        samples, rate = runtime_refs.samples(utt)
        session = s2t.stream()
        position = 0
        while position < len(samples):
            step = rng.randint(1, 3000)
            session.accept_waveform(samples[position:position + step], rate)
            position += step
        result = session.finalize()
        ref = runtime_refs.results[search][utt]
        assert result.tokens == ref["tokens"], utt
        assert [round(t, 6) for t in result.timestamps] == ref["timestamps"], utt
        assert result.text == ref["text"], utt
