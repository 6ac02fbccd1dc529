"""Check a Kaldi data directory and report every problem, utterance by utterance.

:func:`validate_data_dir` never stops at the first problem: it reads every table and (unless
told not to) every utterance's audio, and returns a :class:`ValidationReport` listing each
``(utt_id, reason)``. :func:`write_clean_data_dir` writes the utterances without problems to a
new directory, sorted, with the report beside them.

Problems found (``code``: meaning):

* ``unsorted``: a table is not in ``LC_ALL=C sort`` order (fixed by writing a clean dir).
* ``duplicate_id``: an id appears twice in one table.
* ``missing_text`` / ``missing_audio`` / ``missing_speaker`` / ``missing_recording``: an id on
  one side only (wav.scp or segments vs text, utt2spk; segments vs wav.scp).
* ``unreadable``: the audio cannot be read (missing file, truncated WAV, failing pipe,
  headerless ``*.raw`` file: convert it in a ``sox ... |`` pipe, ...).
* ``empty_audio``, ``nan_audio`` (NaN or Inf samples), ``silent`` (every sample is zero),
  ``wrong_rate``, ``not_mono``, ``too_short`` (fewer than 400 samples at 16 kHz: no encoder
  frame), ``length_mismatch`` (``utt2num_samples`` disagrees with the audio).
* ``empty_text``: a blank transcript.
* ``too_long``: more target tokens than the transducer may emit. The encoder (stride 320,
  receptive field 400 samples at 16 kHz) gives ``T = (S - 400) // 320 + 1`` frames
  (:func:`xtrans.frames.num_frames`); an
  utterance is rejected when ``U > max_tokens_per_frame * T``. A standard RNN-T can emit several
  tokens per frame, but one per frame is the limit of monotonic/pruned transducer losses and of
  greedy search with one symbol per frame, and ``U > T`` almost always means a wrong
  transcript or truncated audio.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from xtrans.data.audio import BadAudioError, read_audio
from xtrans.data.kaldi_dir import (
    TABLE_FILES,
    DataDir,
    find_unsorted,
    read_data_dir,
    read_table,
    write_data_dir,
)
from xtrans.frames import FRAME_STRIDE, RECEPTIVE_FIELD, SAMPLE_RATE, num_frames  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

MODEL_SAMPLE_RATE = SAMPLE_RATE
"""Rate of the encoder's input; frame counts are computed at this rate."""

REPORT_FILE = "validation_report.txt"
"""Name of the report written into a clean data directory."""


encoder_frames = num_frames
"""Encoder frames ``T = (S - 400) // 320 + 1`` of ``S`` samples at 16 kHz (0 if S < 400);
the same function as :func:`xtrans.frames.num_frames`."""


def count_characters(text: str) -> list[str]:
    """Fallback tokenizer: one token per character, runs of whitespace counted as one space."""
    return list(" ".join(text.split()))


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem of one utterance.

    Attributes:
        utt_id: the utterance (or recording) concerned.
        code: a short category, e.g. ``"nan_audio"`` (see the module docstring).
        reason: what is wrong, in words.
        drop: whether a clean data directory leaves the utterance out (False for problems that
            writing the clean directory fixes, like an unsorted file).
    """

    utt_id: str
    code: str
    reason: str
    drop: bool = True


@dataclasses.dataclass
class ValidationReport:
    """Everything :func:`validate_data_dir` found.

    Attributes:
        data_dir: the directory checked.
        num_utterances: utterances in the directory (keys of segments, else of wav.scp).
        problems: every problem, in the order found.
        num_samples: utterance -> samples at its own rate, for audio that was read.
        data: the directory as read (for :func:`write_clean_data_dir`).
    """

    data_dir: str
    num_utterances: int
    problems: list[Problem]
    num_samples: dict[str, int] = dataclasses.field(default_factory=dict)
    data: DataDir | None = dataclasses.field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def bad_utt_ids(self) -> set[str]:
        """Utterances that a clean directory drops."""
        return {p.utt_id for p in self.problems if p.drop}

    def pairs(self) -> list[tuple[str, str]]:
        """The problems as ``(utt_id, reason)`` pairs."""
        return [(p.utt_id, p.reason) for p in self.problems]

    def reasons(self, utt_id: str) -> list[str]:
        """The codes of the problems of one utterance."""
        return [p.code for p in self.problems if p.utt_id == utt_id]

    def summary(self) -> str:
        """A few lines: totals, then the number of problems per code."""
        counts = collections.Counter(p.code for p in self.problems)
        kept = self.num_utterances - len(self.bad_utt_ids & set(self._utt_ids()))
        lines = [
            f"{self.data_dir}: {self.num_utterances} utterances, {len(self.problems)} problems, "
            f"{kept} utterances usable"
        ]
        lines += [f"  {code}: {n}" for code, n in sorted(counts.items())]
        return "\n".join(lines)

    def _utt_ids(self) -> list[str]:
        return self.data.utt_ids if self.data is not None else []

    def format(self) -> str:
        """The summary followed by one ``<utt_id> <code>: <reason>`` line per problem."""
        lines = [self.summary(), ""]
        lines += [f"{p.utt_id} {p.code}: {p.reason}" for p in self.problems]
        return "\n".join(lines) + "\n"


def audio_problems(
    samples: np.ndarray,
    rate: int,
    *,
    sample_rate: int | None = MODEL_SAMPLE_RATE,
    mono: bool = True,
) -> list[tuple[str, str]]:
    """Check decoded audio.

    Args:
        samples: ``(S, C)`` float samples as returned by :func:`xtrans.data.audio.read_audio`.
        rate: their sample rate in Hz.
        sample_rate: the required rate, or ``None`` to accept any rate.
        mono: whether more than one channel is a problem.

    Returns:
        ``[(code, reason), ...]``, empty when the audio is fine.
    """
    found = []
    num_samples, channels = samples.shape
    if sample_rate is not None and rate != sample_rate:
        found.append(("wrong_rate", f"sample rate {rate} Hz, expected {sample_rate} Hz"))
    if mono and channels != 1:
        found.append(("not_mono", f"{channels} channels, expected mono"))
    if num_samples == 0:
        found.append(("empty_audio", "audio has no samples"))
        return found
    finite = np.isfinite(samples)
    if not finite.all():
        found.append(("nan_audio", f"{int((~finite).sum())} samples are NaN or infinite"))
    elif not samples.any():
        found.append(("silent", "every sample is zero"))
    samples_16k = round(num_samples * MODEL_SAMPLE_RATE / rate)
    if samples_16k < RECEPTIVE_FIELD:
        found.append((
            "too_short",
            f"{num_samples / rate * 1000:.1f} ms is shorter than one encoder frame (25 ms)",
        ))
    return found


def _check_tables(root: Path, problems: list[Problem]) -> None:
    for name in TABLE_FILES:
        if not (root / name).exists():
            continue
        keys = [key for key, _ in read_table(root / name)]
        index = find_unsorted(keys)
        if index is not None:
            problems.append(Problem(
                keys[index], "unsorted",
                f"{name} is not sorted: {keys[index]!r} (line {index + 1}) comes after "
                f"{keys[index - 1]!r}; sort it with 'LC_ALL=C sort'", drop=False,
            ))
        counts = collections.Counter(keys)
        for key in sorted(k for k, n in counts.items() if n > 1):
            problems.append(Problem(key, "duplicate_id", f"{name} has {counts[key]} lines for it"))


def _check_ids(data: DataDir, problems: list[Problem]) -> None:
    utts = set(data.utt_ids)
    if data.segments is not None:
        for utt, segment in sorted(data.segments.items()):
            if segment.recording_id not in data.wav_scp:
                problems.append(Problem(
                    utt, "missing_recording",
                    f"segments names recording {segment.recording_id!r}, which is not in wav.scp",
                ))
    audio_file = "segments" if data.segments is not None else "wav.scp"
    for table, name, code in ((data.text, "text", "missing_text"),
                              (data.utt2spk, "utt2spk", "missing_speaker")):
        if table is None:
            continue
        for utt in sorted(utts - table.keys()):
            problems.append(Problem(utt, code, f"in {audio_file} but not in {name}"))
        for utt in sorted(table.keys() - utts):
            problems.append(Problem(utt, "missing_audio", f"in {name} but not in {audio_file}"))


def validate_data_dir(
    path: str | os.PathLike,
    *,
    sample_rate: int | None = MODEL_SAMPLE_RATE,
    mono: bool = True,
    check_audio: bool = True,
    tokenizer: Callable[[str], Sequence] | None = None,
    max_tokens_per_frame: float | None = 1.0,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> ValidationReport:
    """Check a data directory and report every problem with the utterance it concerns.

    Args:
        path: the Kaldi data directory.
        sample_rate: the rate the audio must have, or ``None`` to accept any (raw corpora
            before ``prepare_audio``).
        mono: whether multi-channel audio is a problem.
        check_audio: read every utterance's audio; without it, lengths for the ``too_long``
            check come from ``utt2num_samples`` (at ``sample_rate``, 16 kHz if None) or
            ``utt2dur``.
        tokenizer: text -> token sequence (e.g. ``Tokenizer.encode``); characters if ``None``.
        max_tokens_per_frame: ``too_long`` threshold; ``None`` skips the check.
        progress: wraps the iterable of utterance ids, e.g. ``tqdm`` in a command-line tool.

    Returns:
        the :class:`ValidationReport`.

    Raises:
        DataDirError: when the directory or its ``wav.scp`` is missing or a numeric table or
            ``segments`` line cannot be parsed.
        ValueError: for a non-positive ``max_tokens_per_frame`` or ``sample_rate``.
    """
    if max_tokens_per_frame is not None and max_tokens_per_frame <= 0:
        raise ValueError(
            f"max_tokens_per_frame must be positive or None, found {max_tokens_per_frame}"
        )
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz or None, found {sample_rate}")
    root = Path(path)
    data = read_data_dir(root)
    problems: list[Problem] = []
    _check_tables(root, problems)
    _check_ids(data, problems)
    tokenize = tokenizer if tokenizer is not None else count_characters

    num_samples: dict[str, int] = {}
    rates: dict[str, int] = {}
    utt_ids = data.utt_ids
    for utt in progress(utt_ids) if progress is not None else utt_ids:
        text = None if data.text is None else data.text.get(utt)
        if text is not None and not text.strip():
            problems.append(Problem(utt, "empty_text", "transcript is empty"))
        if check_audio:
            length = _check_audio(utt, data, sample_rate, mono, problems)
            if length is None:
                continue
            num_samples[utt], rates[utt] = length
        if text and text.strip() and max_tokens_per_frame is not None:
            samples_16k = _samples_at_16k(utt, data, num_samples, rates, sample_rate)
            if samples_16k is not None:
                _check_token_rate(utt, len(tokenize(text)), samples_16k, max_tokens_per_frame, problems)
    report = ValidationReport(str(root), len(data), problems, num_samples, data)
    logger.info("%s", report.summary())
    return report


def _check_audio(
    utt: str, data: DataDir, sample_rate: int | None, mono: bool, problems: list[Problem]
) -> tuple[int, int] | None:
    """Reads one utterance's audio and appends its problems; ``(samples, rate)``, or ``None`` if unread.

    ``None`` for a missing recording (``missing_recording`` is reported by ``_check_ids``) and
    for unreadable audio (reported here).
    """
    try:
        entry, segment = data.wav_entry(utt)
    except KeyError:
        return None
    try:
        samples, rate = read_audio(entry, utt_id=utt, segment=segment)
        found = audio_problems(samples, rate, sample_rate=sample_rate, mono=mono)
    except BadAudioError as err:
        problems.append(Problem(utt, "unreadable", err.reason))
        return None
    except Exception as err:  # one bad utterance never stops the check of the others
        logger.debug("checking %s (%s) failed", utt, entry, exc_info=True)
        problems.append(Problem(utt, "unreadable", f"{type(err).__name__}: {err}"))
        return None
    for code, reason in found:
        problems.append(Problem(utt, code, reason))
    expected = None if data.utt2num_samples is None else data.utt2num_samples.get(utt)
    if expected is not None and expected != len(samples):
        problems.append(Problem(
            utt, "length_mismatch",
            f"utt2num_samples says {expected} samples, the audio has {len(samples)}",
        ))
    return len(samples), rate


def _check_token_rate(utt: str, num_tokens: int, samples_16k: int, max_tokens_per_frame: float,
                      problems: list[Problem]) -> None:
    """``too_long`` when the transcript has more tokens than a transducer may emit on its frames."""
    frames = num_frames(samples_16k)
    if num_tokens > max_tokens_per_frame * frames:
        problems.append(Problem(
            utt, "too_long",
            f"{num_tokens} tokens for {frames} encoder frames "
            f"({samples_16k / MODEL_SAMPLE_RATE:.2f} s); a transducer allows at most "
            f"{max_tokens_per_frame:g} per frame",
        ))


def _samples_at_16k(
    utt: str,
    data: DataDir,
    num_samples: dict[str, int],
    rates: dict[str, int],
    sample_rate: int | None,
) -> int | None:
    if utt in num_samples:
        return round(num_samples[utt] * MODEL_SAMPLE_RATE / rates[utt])
    if data.utt2num_samples is not None and utt in data.utt2num_samples:
        rate = sample_rate or MODEL_SAMPLE_RATE
        return round(data.utt2num_samples[utt] * MODEL_SAMPLE_RATE / rate)
    if data.utt2dur is not None and utt in data.utt2dur:
        return round(data.utt2dur[utt] * MODEL_SAMPLE_RATE)
    return None


def write_clean_data_dir(report: ValidationReport, path: str | os.PathLike) -> DataDir:
    """Write the utterances without dropping problems to a new data directory.

    The tables are written sorted (fixing ``unsorted``), ``utt2num_samples`` is refreshed from
    the audio read during validation, and the report goes to ``validation_report.txt``.

    Args:
        report: a report from :func:`validate_data_dir`.
        path: the output directory; must differ from the validated one.

    Returns:
        the clean :class:`DataDir`.

    Raises:
        ValueError: when ``path`` is the validated directory or the report holds no data.
    """
    if report.data is None:
        raise ValueError("report has no data directory attached; pass one from validate_data_dir")
    root = Path(path)
    if root.exists() and root.resolve() == Path(report.data_dir).resolve():
        raise ValueError(f"path must differ from the validated directory, found {path}")
    bad = report.bad_utt_ids
    data = report.data
    clean = data.subset(u for u in data.utt_ids if u not in bad)
    kept = set(clean.utt_ids)
    measured = {u: n for u, n in report.num_samples.items() if u in kept}
    if measured and len(measured) == len(clean):
        clean.utt2num_samples = measured
    write_data_dir(clean, root)
    (root / REPORT_FILE).write_text(report.format(), encoding="utf-8")
    logger.info("kept %d of %d utterances in %s", len(clean), len(data), root)
    return clean
