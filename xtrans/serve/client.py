"""A Python client of the live server (:mod:`xtrans.serve.protocol`), for scripts, tests and the bench.

::

    import asyncio, soundfile
    from xtrans.serve.client import stream_audio
    samples, rate = soundfile.read("a.wav", dtype="float32")
    messages = asyncio.run(stream_audio("ws://127.0.0.1:6006/ws", samples, rate))
    print([m["text"] for m in messages if m["type"] == "final"])

Or from a shell: ``python -m xtrans.serve.client ws://127.0.0.1:6006/ws a.wav [--realtime]
[--hotwords hotwords.txt --hotwords-score 1.5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from xtrans.context.hotwords import read_hotwords
from xtrans.serve.protocol import encode_audio


@dataclass
class StreamResult:
    """Everything a connection received.

    Attributes:
        messages: the server's JSON messages in order.
        close_code: the websocket close code (1000 after ``done``).
        close_reason: the close reason.
        received_at: ``time.monotonic()`` of each message's arrival.
    """

    messages: List[Dict[str, Any]] = field(default_factory=list)
    close_code: Optional[int] = None
    close_reason: str = ""
    received_at: List[float] = field(default_factory=list)

    @property
    def finals(self) -> List[Dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "final"]

    @property
    def errors(self) -> List[Dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "error"]

    @property
    def text(self) -> str:
        """The finals' texts joined by spaces."""
        return " ".join(m["text"] for m in self.finals if m["text"])


def pieces_of(samples: np.ndarray, sizes: Iterable[int]) -> List[np.ndarray]:
    """``samples`` cut into consecutive pieces of the given sizes (the last one holds the rest)."""
    out, pos = [], 0
    for n in sizes:
        if pos >= len(samples):
            break
        out.append(samples[pos:pos + n])
        pos += n
    if pos < len(samples):
        out.append(samples[pos:])
    return out


async def stream_audio(url: str, samples: np.ndarray, sample_rate: int = 16000, fmt: str = "s16le", *,
                       piece_samples: Optional[Iterable[int]] = None, realtime: bool = False,
                       send_start: bool = True, send_end: bool = True, timeout_s: float = 60.0,
                       sent_at: Optional[List[float]] = None, hotwords: Optional[Sequence[str]] = None,
                       hotwords_score: Optional[float] = None) -> StreamResult:
    """Streams one signal over one connection and collects the answers until the server closes.

    Args:
        url: ``ws://HOST:PORT/ws``.
        samples: (S,) float mono in [-1, 1].
        sample_rate: its rate in Hz (told in the start message).
        fmt: ``s16le`` or ``f32le``.
        piece_samples: the sizes of the binary messages in samples (default 100 ms each).
        realtime: sleep between pieces so that the audio goes at real-time pace.
        send_start, send_end: whether to send the start / end message.
        timeout_s: the most time to wait for the server to close after the audio.
        sent_at: if given, ``time.monotonic()`` after each piece is sent is appended to it.
        hotwords, hotwords_score: the connection's hotwords and their boost, sent in the start
            message (a server with ``--search beam``; ``docs/decoding.md``).
    """
    samples = np.asarray(samples, dtype=np.float32)
    sizes = piece_samples if piece_samples is not None else iter(lambda: max(1, sample_rate // 10), None)
    result = StreamResult()
    async with connect(url, max_size=None, compression=None) as ws:
        async def receive():
            try:
                async for message in ws:
                    result.messages.append(json.loads(message))
                    result.received_at.append(time.monotonic())
            except ConnectionClosed:
                pass

        reader = asyncio.create_task(receive())
        try:
            if send_start:
                start_message: Dict[str, Any] = {"type": "start", "sample_rate": sample_rate, "format": fmt}
                if hotwords is not None:
                    start_message["hotwords"] = list(hotwords)
                if hotwords_score is not None:
                    start_message["hotwords_score"] = hotwords_score
                await ws.send(json.dumps(start_message))
            start = time.monotonic()
            position = 0
            for piece in pieces_of(samples, sizes):
                await ws.send(encode_audio(piece, fmt))
                position += len(piece)
                if sent_at is not None:
                    sent_at.append(time.monotonic())
                if realtime:
                    await asyncio.sleep(max(0.0, start + position / sample_rate - time.monotonic()))
            if send_end:
                await ws.send(json.dumps({"type": "end"}))
        except ConnectionClosed:
            pass
        await asyncio.wait_for(reader, timeout_s)
        result.close_code, result.close_reason = ws.close_code, ws.close_reason or ""
    return result


def main(argv: Optional[List[str]] = None) -> int:
    import soundfile

    p = argparse.ArgumentParser(prog="python -m xtrans.serve.client", description="Stream audio files to the "
                                "live server and print its finals.")
    p.add_argument("url", help="ws://HOST:PORT/ws")
    p.add_argument("files", nargs="+")
    p.add_argument("--realtime", action="store_true", help="send at real-time pace")
    p.add_argument("--format", choices=("s16le", "f32le"), default="s16le")
    p.add_argument("--json", action="store_true", help="print every message as JSON")
    p.add_argument("--hotwords", metavar="FILE", default=None,
                   help="phrases to boost (one per line, optionally 'PHRASE :SCORE'), sent in the start message")
    p.add_argument("--hotwords-score", type=float, default=None, help="their per-token boost (default: the server's)")
    args = p.parse_args(argv)
    try:
        hotwords = None if args.hotwords is None else read_hotwords(args.hotwords)
    except (OSError, ValueError) as err:
        print(f"error: --hotwords: {err}", file=sys.stderr)
        return 2
    status = 0
    for path in args.files:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
        result = asyncio.run(stream_audio(args.url, samples.mean(axis=1), rate, args.format, realtime=args.realtime,
                                          hotwords=hotwords, hotwords_score=args.hotwords_score))
        for m in result.messages:
            if args.json:
                print(json.dumps(m, ensure_ascii=False))
            elif m["type"] == "final":
                print(f"{path}\t{m['start']:.2f}-{m['end']:.2f}\t{m['text']}")
            elif m["type"] == "error":
                print(f"{path}\terror: {m['message']}", file=sys.stderr)
        status |= result.close_code != 1000
    return status


if __name__ == "__main__":
    sys.exit(main())
