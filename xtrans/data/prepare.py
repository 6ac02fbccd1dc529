"""Format a data directory's audio for training: 16 kHz mono in kaldiio ark files.

Recipe stage 2. Every utterance (segments cut out) is read, down-mixed to mono, resampled to
``sample_rate`` and stored in ``<dest>/data/wav.<job>.ark`` as an embedded WAV, which carries
its sample rate (kaldiio's ``(rate, array)`` format, read back by
:func:`xtrans.data.audio.read_audio`):

* ``dtype="int16"`` (default): 16-bit PCM, half the disk of float32 and what ESPnet stores;
  quantisation noise (-96 dB) is far below any speech corpus's noise floor. Samples beyond
  [-1, 1) after resampling are clipped (counted in the log).
* ``dtype="float32"``: IEEE-float WAV, bit-exact resampler output, no clipping.

The output directory gets ``wav.scp`` (absolute ark paths with offsets), ``utt2num_samples``,
``utt2dur``, and ``text``/``utt2spk``/``spk2utt`` restricted to the kept utterances (no
``segments``: each utterance is stored on its own). An utterance that cannot be read, holds
NaN/Inf, is all zeros or falls outside ``[min_seconds, max_seconds]`` is dropped and listed in
``<dest>/dropped_utts`` with its reason, and so is a transcript without audio (in ``text`` but
not in ``wav.scp``, or not in ``segments``); the run never stops on a bad utterance, nor when a
worker process dies (its remaining utterances are listed as dropped).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import queue
from collections.abc import Callable
from pathlib import Path

import kaldiio
import numpy as np
import torch

from xtrans.data.audio import BadAudioError, read_audio, to_mono
from xtrans.data.kaldi_dir import DataDir, Segment, read_data_dir, read_table, write_data_dir
from xtrans.data.resample import resample
from xtrans.data.validate import Problem, audio_problems
from xtrans.frames import RECEPTIVE_FIELD, SAMPLE_RATE

logger = logging.getLogger(__name__)

DROPPED_FILE = "dropped_utts"
"""File in the output directory listing dropped utterances: ``<utt> <code>: <reason>``."""

_Item = tuple[str, str, Segment | None]  # (utt_id, wav entry, segment)


@dataclasses.dataclass
class PrepareResult:
    """What :func:`prepare_audio` did.

    Attributes:
        data: the written data directory.
        dropped: one :class:`~xtrans.data.validate.Problem` per dropped utterance.
    """

    data: DataDir
    dropped: list[Problem]

    def summary(self) -> str:
        """One line per outcome: kept, then dropped by code."""
        counts: dict[str, int] = {}
        for p in self.dropped:
            counts[p.code] = counts.get(p.code, 0) + 1
        lines = [f"kept {len(self.data)} utterances, dropped {len(self.dropped)}"]
        lines += [f"  {code}: {n}" for code, n in sorted(counts.items())]
        return "\n".join(lines)


def _convert(
    item: _Item, sample_rate: int, min_samples: int, max_samples: int | None
) -> tuple[torch.Tensor | None, Problem | None]:
    utt, entry, segment = item
    try:
        samples, rate = read_audio(entry, utt_id=utt, segment=segment)
    except BadAudioError as err:
        return None, Problem(utt, "unreadable", err.reason)
    found = audio_problems(samples, rate, sample_rate=None, mono=False)
    if found:
        code, reason = found[0]
        return None, Problem(utt, code, reason)
    waveform = to_mono(samples)
    if rate != sample_rate:
        waveform = resample(waveform, rate, sample_rate)
    if len(waveform) < min_samples:
        return None, Problem(
            utt, "too_short", f"{len(waveform) / sample_rate:.3f} s is below the minimum "
            f"{min_samples / sample_rate:.3f} s"
        )
    if max_samples is not None and len(waveform) > max_samples:
        return None, Problem(
            utt, "too_long_audio", f"{len(waveform) / sample_rate:.3f} s is above the maximum "
            f"{max_samples / sample_rate:.3f} s"
        )
    return waveform, None


def _write_shard(
    items: list[_Item],
    ark_path: str,
    scp_path: str,
    sample_rate: int,
    dtype: str,
    min_samples: int,
    max_samples: int | None,
    report: Callable[[tuple], None],
) -> None:
    """Convert one shard; ``report`` receives ``("ok", utt, samples)`` or ``("bad", Problem)``."""
    torch.set_num_threads(1)
    clipped_utts = 0
    with open(ark_path, "wb") as ark, open(scp_path, "w", encoding="utf-8") as scp:
        for item in items:
            try:
                waveform, problem = _convert(item, sample_rate, min_samples, max_samples)
            except Exception as err:  # never stop the run on one utterance
                logger.exception("utterance %s failed", item[0])
                waveform, problem = None, Problem(item[0], "error", f"{type(err).__name__}: {err}")
            if problem is not None:
                report(("bad", problem))
                continue
            array = waveform.numpy()
            if dtype == "int16":
                scaled = np.round(array * 32768.0)
                clipped_utts += bool(np.any((scaled > 32767) | (scaled < -32768)))
                data = (sample_rate, np.clip(scaled, -32768, 32767).astype(np.int16))
                kaldiio.save_ark(ark, {item[0]: data}, scp=scp)
            else:
                kaldiio.save_ark(
                    ark, {item[0]: (sample_rate, array.astype(np.float32))}, scp=scp,
                    write_function="soundfile", write_kwargs={"format": "wav", "subtype": "FLOAT"},
                )
            ark.flush()  # a worker that dies later keeps what it reported as done
            scp.flush()
            report(("ok", item[0], len(array)))
    if clipped_utts:
        logger.warning("%s: %d utterances clipped to int16 range", ark_path, clipped_utts)


def _worker(job: int, items, ark_path, scp_path, sample_rate, dtype, min_samples, max_samples,
            messages) -> None:
    _write_shard(items, ark_path, scp_path, sample_rate, dtype, min_samples, max_samples,
                 messages.put)
    messages.put(("done", job))


def _run_parallel(shards, paths, args, on_progress, outcomes) -> None:
    """Run one process per shard, collecting messages into ``outcomes``.

    Workers are forked where the platform can (they start in milliseconds instead of seconds
    of re-importing torch) and spawned elsewhere. Like ``DataLoader`` workers they run torch
    single-threaded, which keeps a fork after the parent used OpenMP safe.
    """
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    messages = context.Queue()
    processes = [
        context.Process(
            target=_worker, args=(job, items, *paths[job], *args, messages), daemon=True
        )
        for job, items in enumerate(shards)
    ]
    for p in processes:
        p.start()
    running = set(range(len(shards)))
    while running:
        try:
            message = messages.get(timeout=1.0)
        except queue.Empty:
            for job in sorted(running):
                if not processes[job].is_alive():  # died without saying "done"
                    # drain what it sent before dying, then give up on the rest
                    _drain(messages, outcomes, on_progress, running)
                    if job in running:
                        running.discard(job)
                        for utt, _, _ in shards[job]:
                            if utt not in outcomes:
                                outcomes[utt] = Problem(
                                    utt, "error",
                                    f"worker {job + 1} exited with code {processes[job].exitcode}",
                                )
                                on_progress(1)
            continue
        _handle(message, outcomes, on_progress, running)
    for p in processes:
        p.join()


def _drain(messages, outcomes, on_progress, running) -> None:
    while True:
        try:
            _handle(messages.get_nowait(), outcomes, on_progress, running)
        except queue.Empty:
            return


def _handle(message, outcomes, on_progress, running) -> None:
    if message[0] == "done":
        running.discard(message[1])
    elif message[0] == "ok":
        outcomes[message[1]] = message[2]
        on_progress(1)
    else:
        outcomes[message[1].utt_id] = message[1]
        on_progress(1)


def prepare_audio(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    nj: int = 1,
    sample_rate: int = SAMPLE_RATE,
    dtype: str = "int16",
    min_seconds: float = RECEPTIVE_FIELD / SAMPLE_RATE,
    max_seconds: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> PrepareResult:
    """Resample a data directory to ``sample_rate`` mono and store it in kaldiio ark files.

    Args:
        src: the input Kaldi data directory (any rates, channels, entry kinds, segments).
        dest: the output directory; its ``data/`` folder receives the ark files.
        nj: parallel worker processes (each writes its own ark); 1 runs in this process.
        sample_rate: output rate in Hz.
        dtype: ``"int16"`` or ``"float32"`` storage (see the module docstring).
        min_seconds: drop shorter utterances (default: one encoder frame, 25 ms).
        max_seconds: drop longer utterances; ``None`` keeps all.
        on_progress: called with the number of utterances just finished (e.g. ``tqdm.update``).

    Returns:
        a :class:`PrepareResult` with the written directory and the dropped utterances.

    Raises:
        ValueError: for a bad ``nj``, ``dtype``, ``sample_rate`` or length bounds.
        DataDirError: when ``src`` is not a readable data directory.
    """
    _check_prepare_args(nj, dtype, sample_rate, min_seconds, max_seconds)
    data = read_data_dir(src)
    dest = Path(dest)
    if dest.resolve() == Path(src).resolve():
        raise ValueError(f"dest must differ from src, found {dest}")
    (dest / "data").mkdir(parents=True, exist_ok=True)
    on_progress = on_progress or (lambda n: None)

    outcomes: dict[str, int | Problem] = {p.utt_id: p for p in _transcripts_without_audio(data)}
    items = _recordings(data, outcomes, on_progress)
    nj = max(1, min(nj, len(items)))
    bounds = np.linspace(0, len(items), nj + 1).round().astype(int)
    shards = [items[bounds[j]:bounds[j + 1]] for j in range(nj)]
    paths = [
        (str((dest / "data" / f"wav.{j + 1}.ark").resolve()),
         str((dest / "data" / f"wav.{j + 1}.scp").resolve()))
        for j in range(nj)
    ]
    min_samples = max(1, round(min_seconds * sample_rate))
    max_samples = None if max_seconds is None else round(max_seconds * sample_rate)
    args = (sample_rate, dtype, min_samples, max_samples)
    if nj == 1:
        def report(message):
            _handle(message, outcomes, on_progress, set())
        _write_shard(shards[0], *paths[0], *args, report)
    else:
        _run_parallel(shards, paths, args, on_progress, outcomes)
    result = _write_prepared(data, dest, paths, outcomes, sample_rate)
    logger.info("%s: %s", dest, result.summary())
    return result


def _check_prepare_args(nj: int, dtype: str, sample_rate: int, min_seconds: float,
                        max_seconds: float | None) -> None:
    """The argument checks of :func:`prepare_audio`."""
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    if dtype not in ("int16", "float32"):
        raise ValueError(f"dtype must be 'int16' or 'float32', got {dtype!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate: expected a positive number of Hz, found {sample_rate}")
    if max_seconds is not None and max_seconds < min_seconds:
        raise ValueError(f"max_seconds ({max_seconds}) must be >= min_seconds ({min_seconds})")


def _transcripts_without_audio(data: DataDir) -> list[Problem]:
    """A ``missing_audio`` problem for each utterance of ``text`` that ``wav.scp`` (or ``segments``) lacks."""
    if data.text is None:
        return []
    audio_file = "segments" if data.segments is not None else "wav.scp"
    return [Problem(utt, "missing_audio", f"in text but not in {audio_file}")
            for utt in sorted(data.text.keys() - set(data.utt_ids))]


def _recordings(data: DataDir, outcomes: dict, on_progress: Callable[[int], None]) -> list[_Item]:
    """The work items ``(utt_id, wav entry, segment)``; an utterance without a recording goes to ``outcomes``."""
    items: list[_Item] = []
    for utt in data.utt_ids:
        try:
            entry, segment = data.wav_entry(utt)
        except KeyError:
            outcomes[utt] = Problem(utt, "missing_recording", "recording not in wav.scp")
            on_progress(1)
            continue
        items.append((utt, entry, segment))
    return items


def _write_prepared(data: DataDir, dest: Path, paths: list[tuple[str, str]], outcomes: dict,
                    sample_rate: int) -> PrepareResult:
    """Merges the shards' scp files and writes the output data directory and ``dropped_utts``.

    ``outcomes`` maps each utterance to its sample count (converted) or a :class:`Problem`;
    a converted utterance whose scp line is missing (its worker died) is dropped too.
    """
    wav_scp = {}
    for _, scp_path in paths:
        if Path(scp_path).exists():
            wav_scp.update(read_table(scp_path))
    kept = {utt: n for utt, n in outcomes.items() if isinstance(n, int) and utt in wav_scp}
    dropped = [p for p in outcomes.values() if isinstance(p, Problem)]
    dropped += [
        Problem(utt, "error", "converted, but its worker died before writing the scp line")
        for utt, n in outcomes.items() if isinstance(n, int) and utt not in wav_scp
    ]
    dropped.sort(key=lambda p: p.utt_id)
    out = data.subset(kept)
    out.wav_scp = {utt: wav_scp[utt] for utt in kept}
    out.segments = None
    out.utt2num_samples = kept
    out.utt2dur = {utt: n / sample_rate for utt, n in kept.items()}
    write_data_dir(out, dest)
    (dest / DROPPED_FILE).write_text(
        "".join(f"{p.utt_id} {p.code}: {p.reason}\n" for p in dropped), encoding="utf-8"
    )
    return PrepareResult(out, dropped)
