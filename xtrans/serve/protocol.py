"""The websocket protocol of the live server (``python -m xtrans.bin.serve``).

A client connects to ``ws://HOST:PORT/ws`` (the server's ``GET /`` is the microphone page) and
streams one audio signal per connection:

1. optionally, first, a text message ``{"type": "start", "sample_rate": 16000, "format": "s16le",
   "hotwords": ["TURN ON THE RADIO", "XLSR :2.5"], "hotwords_score": 1.5}``.
   ``sample_rate`` is any integer rate in Hz (resampled to 16 kHz on the server), ``format`` is
   ``"s16le"`` (signed 16-bit little-endian PCM, full scale 32768) or ``"f32le"`` (32-bit float
   little-endian, full scale 1.0). ``hotwords`` are phrases to boost in this connection (1 to
   :data:`MAX_HOTWORDS` strings of at most :data:`MAX_HOTWORD_CHARS` characters, each ``PHRASE``
   or ``PHRASE :SCORE`` as in a hotwords file, ``docs/decoding.md``), in place of the server's
   own; ``hotwords_score`` (a number > 0, only with ``hotwords``) is their per-token boost
   (default: the server's, 1.5). Hotwords need a server running modified beam search
   (``--search beam``). Every key is optional; the defaults are 16000, ``s16le`` and the
   server's hotwords (if any), which also apply when no ``start`` message comes;
2. binary messages: the mono PCM samples of that format, any number of whole samples per message
   (an even byte count for ``s16le``, a multiple of 4 for ``f32le``);
3. a text message ``{"type": "end"}`` when the audio is over.

The server answers with text messages, JSON objects:

- ``{"type": "partial", "segment": k, "text": "..."}`` whenever a decoded chunk changes the best
  text of the current segment ``k`` (0, 1, ...);
- ``{"type": "final", "segment": k, "text": "...", "start": s, "end": s, "tokens": [...],
  "token_ids": [...], "timestamps": [...]}`` when segment ``k`` ends at an endpoint, and for the
  last segment after ``end``. ``tokens`` are the token strings, ``token_ids`` their ids,
  ``timestamps`` the emission time of each token; ``start``, ``end`` and ``timestamps`` are seconds
  from the start of the connection's audio. Segments tile the audio: a segment starts where the
  previous one ended. The last final (after ``end``) is always sent, possibly with empty text;
- ``{"type": "done"}`` after the last final, then the server closes the connection normally (1000).

Endpointing (sherpa's rules, :class:`xtrans.serve.engine.EndpointConfig`): a segment ends after
``--endpoint-silence-ms`` of trailing blank (no token emitted) once it has decoded a token, or
when it reaches ``--max-segment-s`` (rounded up to a whole chunk); the encoder state and the
search restart for the next segment while the audio keeps flowing. A segment that reaches the
maximum length without any token restarts silently (no final; it keeps its index).

Errors end the connection: the server sends ``{"type": "error", "message": "..."}`` and closes
with one of these codes (the other connections carry on):

=====  ===================================================================================
code   when
=====  ===================================================================================
1003   unsupported data: a ``start`` with an unknown ``format``, a bad ``sample_rate``, bad
       ``hotwords`` (not a list of strings, over the limits, a phrase the model's tokens
       cannot spell, hotwords on a greedy-search server) or a bad ``hotwords_score``; a
       binary message that is not a whole number of samples; non-finite ``f32le`` samples
1008   policy violation: a text message that is not a JSON object of a known ``type``; a
       ``start`` after audio or a second ``start``; anything after ``end``; the server is full
       (``--max-connections``); no message for ``--idle-timeout-s``
1009   message too big: a message over ``--max-message-bytes``
1011   internal error: decoding this stream failed
=====  ===================================================================================
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from xtrans.context.hotwords import check_score, parse_hotword

CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

SAMPLE_FORMATS: Dict[str, np.dtype] = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
"""The binary sample formats and their NumPy dtypes."""

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_FORMAT = "s16le"
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
MAX_HOTWORDS = 1000
"""Most phrases in a ``start`` message's ``hotwords``."""
MAX_HOTWORD_CHARS = 200
"""Most characters of one phrase (its ``:SCORE`` included)."""


class ProtocolError(Exception):
    """A client broke the protocol: the connection gets ``{"type": "error", "message": ...}``
    and is closed with ``code``.

    Attributes:
        code: the websocket close code (1003, 1008 or 1009; 1011 is the server's own fault).
        message: what was wrong and what to send instead.
    """

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Start:
    """A ``start`` message: the rate (Hz) and sample format of the binary messages to come, and
    the connection's hotwords (None: the server's) with their per-token boost (None: the server's)."""

    sample_rate: int = DEFAULT_SAMPLE_RATE
    format: str = DEFAULT_FORMAT
    hotwords: Optional[Tuple[str, ...]] = None
    hotwords_score: Optional[float] = None


@dataclass(frozen=True)
class End:
    """The ``end`` message: the audio is over."""


def parse_text(text: str) -> Union[Start, End]:
    """Parses a client's text message.

    Raises:
        ProtocolError: 1008 for anything but a JSON object of type ``start`` or ``end`` (or unknown
            keys); 1003 for a ``start`` whose ``sample_rate``, ``format``, ``hotwords`` or
            ``hotwords_score`` is not supported (whether the model's tokens spell the phrases is
            the server's check, when it opens the stream).
    """
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(CLOSE_POLICY_VIOLATION, f"expected a JSON text message, found {_clip(text)!r}") from None
    if not isinstance(msg, dict) or "type" not in msg:
        raise ProtocolError(CLOSE_POLICY_VIOLATION,
                            f'expected a JSON object with a "type" ("start" or "end"), found {_clip(text)!r}')
    kind = msg["type"]
    if kind == "end":
        _no_other_keys(msg, ("type",))
        return End()
    if kind != "start":
        raise ProtocolError(CLOSE_POLICY_VIOLATION, f'type: expected "start" or "end", found {_clip(repr(kind))}')
    _no_other_keys(msg, ("type", "sample_rate", "format", "hotwords", "hotwords_score"))
    rate = msg.get("sample_rate", DEFAULT_SAMPLE_RATE)
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(CLOSE_UNSUPPORTED_DATA, f"sample_rate: expected an integer rate in Hz from "
                                                    f"{MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}, found {_clip(repr(rate))}")
    fmt = msg.get("format", DEFAULT_FORMAT)
    if fmt not in SAMPLE_FORMATS:
        raise ProtocolError(CLOSE_UNSUPPORTED_DATA,
                            f"format: expected one of {', '.join(SAMPLE_FORMATS)}, found {_clip(repr(fmt))}")
    hotwords = _hotwords(msg)
    score = msg.get("hotwords_score")
    if score is not None:
        if hotwords is None:
            raise ProtocolError(CLOSE_UNSUPPORTED_DATA, "hotwords_score: expected hotwords with it, found none")
        try:
            score = check_score(score)
        except ValueError as err:
            raise ProtocolError(CLOSE_UNSUPPORTED_DATA, _clip(str(err), 200)) from None
    return Start(sample_rate=rate, format=fmt, hotwords=hotwords, hotwords_score=score)


def _hotwords(msg: Dict[str, Any]) -> Optional[Tuple[str, ...]]:
    """A ``start`` message's ``hotwords`` (None when absent), checked (1003 otherwise)."""
    hotwords = msg.get("hotwords")
    if hotwords is None:
        return None
    if not isinstance(hotwords, list) or not all(isinstance(h, str) for h in hotwords):
        raise ProtocolError(CLOSE_UNSUPPORTED_DATA, f"hotwords: expected a list of phrases (strings), found "
                                                    f"{_clip(json.dumps(hotwords))}")
    if not 1 <= len(hotwords) <= MAX_HOTWORDS:
        raise ProtocolError(CLOSE_UNSUPPORTED_DATA, f"hotwords: expected 1 to {MAX_HOTWORDS} phrases, "
                                                    f"found {len(hotwords)}")
    for phrase in hotwords:
        if len(phrase) > MAX_HOTWORD_CHARS:
            raise ProtocolError(CLOSE_UNSUPPORTED_DATA, f"hotwords: expected phrases of at most {MAX_HOTWORD_CHARS} "
                                                        f"characters, found {len(phrase)} in {_clip(phrase)!r}")
        try:
            parse_hotword(phrase)
        except ValueError as err:
            raise ProtocolError(CLOSE_UNSUPPORTED_DATA, _clip(str(err), 200)) from None
    return tuple(h.strip() for h in hotwords)


def decode_audio(data: bytes, fmt: str) -> np.ndarray:
    """A binary message's samples as float32 ``(n,)`` in [-1, 1] (s16le divided by 32768).

    Raises:
        ProtocolError: 1003 when the byte count is not a whole number of samples, or ``f32le``
            samples are not finite.
    """
    dtype = SAMPLE_FORMATS[fmt]
    if len(data) % dtype.itemsize:
        raise ProtocolError(CLOSE_UNSUPPORTED_DATA,
                            f"binary message: expected whole {fmt} samples ({dtype.itemsize} bytes each), "
                            f"found {len(data)} bytes")
    samples = np.frombuffer(data, dtype=dtype)
    if fmt == "s16le":
        return samples.astype(np.float32) / 32768.0
    if not np.isfinite(samples).all():
        raise ProtocolError(CLOSE_UNSUPPORTED_DATA, "binary message: expected finite f32le samples, found NaN or "
                                                    "infinity")
    return samples.astype(np.float32)


def encode_audio(samples: np.ndarray, fmt: str) -> bytes:
    """Float samples (n,) in [-1, 1] as the bytes of a binary message (s16le: scaled, rounded, clipped)."""
    if fmt not in SAMPLE_FORMATS:
        raise ValueError(f"fmt: expected one of {', '.join(SAMPLE_FORMATS)}, found {fmt!r}")
    x = np.asarray(samples, dtype=np.float32)
    if fmt == "s16le":
        return np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2").tobytes()
    return x.astype("<f4").tobytes()


def partial_message(segment: int, text: str) -> Dict[str, Any]:
    return {"type": "partial", "segment": segment, "text": text}


def final_message(segment: int, text: str, start: float, end: float, tokens: Sequence[str],
                  token_ids: Sequence[int], timestamps: Sequence[float]) -> Dict[str, Any]:
    return {"type": "final", "segment": segment, "text": text, "start": _seconds(start), "end": _seconds(end),
            "tokens": list(tokens), "token_ids": [int(i) for i in token_ids],
            "timestamps": [_seconds(t) for t in timestamps]}


def error_message(message: str) -> Dict[str, Any]:
    return {"type": "error", "message": message}


DONE: Dict[str, Any] = {"type": "done"}


def dumps(message: Dict[str, Any]) -> str:
    """A server message as the text of a websocket message."""
    return json.dumps(message, ensure_ascii=False)


def _seconds(t: float) -> float:
    """Seconds rounded to the microsecond (frame times are multiples of 20 ms; no 0.30000000000000004)."""
    return round(float(t), 6) if math.isfinite(t) else float(t)


def _no_other_keys(msg: Dict[str, Any], allowed: Sequence[str]) -> None:
    unknown: List[str] = sorted(k for k in msg if k not in allowed)
    if unknown:
        raise ProtocolError(CLOSE_POLICY_VIOLATION, f'{msg["type"]} message: unknown key(s) {", ".join(map(repr, unknown))}; '
                                                    f"expected only {', '.join(allowed)}")


def _clip(text: Optional[str], limit: int = 80) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[:limit] + "..."
