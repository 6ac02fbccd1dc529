"""Kaldi-style data directories: read and write ``wav.scp``, ``text``, ``utt2spk`` and friends.

A data directory is a folder of plain-text tables, one ``<key> <value>`` line each, sorted by
key (byte order, as ``LC_ALL=C sort``):

==================== ======================================================= ==========
file                 line                                                    required
==================== ======================================================= ==========
``wav.scp``          ``<recording-id> <wav entry>``                          yes
``text``             ``<utt-id> <transcript>`` (may be empty)                no
``utt2spk``          ``<utt-id> <speaker-id>``                               no
``segments``         ``<utt-id> <recording-id> <start s> <end s>``           no
``utt2num_samples``  ``<utt-id> <samples>`` (at the audio's own rate)        no
``utt2dur``          ``<utt-id> <seconds>``                                  no
==================== ======================================================= ==========

Without ``segments`` the recording ids of ``wav.scp`` are the utterance ids. A wav entry is one
of (see :mod:`xtrans.data.audio`)::

    utt1 /abs/path/utt1.flac            a file soundfile can read (WAV, FLAC, ...)
    utt2 dump/data/wav.1.ark:1234       a kaldiio ark entry with its byte offset
    utt3 sox in.sph -t wav - |          a shell command that writes audio to stdout

Relative file and ark paths are resolved when the directory is read: against the data directory
first (the convention of the FSDD copy in ``../shared/data/fsdd``), else against the current directory (the
Kaldi convention, paths relative to the recipe). Once read they are absolute, so a
:class:`DataDir` can be written anywhere and still point at its audio. Pipe commands are kept
verbatim and run in the current directory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

logger = logging.getLogger(__name__)

REQUIRED_FILES = ("wav.scp",)
"""Files without which a folder is not a data directory."""

TABLE_FILES = ("wav.scp", "text", "utt2spk", "segments", "utt2num_samples", "utt2dur")
"""The tables this module reads, in the order they are checked."""


class DataDirError(Exception):
    """A data directory file is missing or has a line that cannot be parsed.

    Attributes:
        path: the offending file (or the directory when a file is missing).
        line_no: 1-based line number, or ``None`` for a whole-file problem.
        reason: what is wrong and how to fix it.
    """

    def __init__(self, path: str | os.PathLike, line_no: int | None, reason: str):
        self.path = str(path)
        self.line_no = line_no
        self.reason = reason
        where = self.path if line_no is None else f"{self.path}:{line_no}"
        super().__init__(f"{where}: {reason}")


class Segment(NamedTuple):
    """One line of ``segments``: an utterance cut out of a recording.

    Attributes:
        recording_id: key into ``wav.scp``.
        start: start time in seconds.
        end: end time in seconds; ``None`` means the end of the recording (Kaldi writes ``-1``).
    """

    recording_id: str
    start: float
    end: float | None


def read_table(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read a Kaldi table as ``(key, value)`` pairs in file order.

    Order and duplicates are kept so that callers (the validator) can report them. Blank lines
    are skipped; the value is everything after the first run of whitespace, stripped, and is
    ``""`` for a line that holds only a key (an empty transcript).

    Args:
        path: the table file, UTF-8.

    Returns:
        ``[(key, value), ...]`` in the order of the file.

    Raises:
        DataDirError: when the file does not exist or is not UTF-8.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataDirError(path, None, "file does not exist") from None
    except UnicodeDecodeError as err:
        raise DataDirError(path, None, f"not UTF-8 ({err.reason} at byte {err.start})") from None
    pairs = []
    for line in lines:
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        pairs.append((parts[0], parts[1].strip() if len(parts) > 1 else ""))
    return pairs


def write_table(path: str | os.PathLike, items: Iterable[tuple[str, object]]) -> None:
    """Write ``(key, value)`` pairs as a table sorted by key (byte order, like ``LC_ALL=C``).

    Args:
        path: the file to (over)write.
        items: pairs; values are written with ``str()``, an empty value leaves just the key.
    """
    lines = []
    for key, value in sorted(items, key=lambda kv: kv[0]):
        value = str(value)
        lines.append(f"{key} {value}\n" if value else f"{key}\n")
    Path(path).write_text("".join(lines), encoding="utf-8")


def is_pipe(entry: str) -> bool:
    """Whether a wav entry is a shell command (``cmd |``)."""
    return entry.rstrip().endswith("|")


def split_ark_offset(entry: str) -> tuple[str, int] | None:
    """Split ``foo.ark:123`` into ``("foo.ark", 123)``; ``None`` for other kinds of entry."""
    if is_pipe(entry) or ":" not in entry:
        return None
    path, _, offset = entry.rpartition(":")
    if not offset.isdigit() or not path:
        return None
    return path, int(offset)


def resolve_entry(entry: str, root: str | os.PathLike) -> str:
    """Make the file path inside a wav entry absolute (see the module docstring for the rule).

    Args:
        entry: a wav.scp value.
        root: the data directory that holds the ``wav.scp``.

    Returns:
        the entry with an absolute path; pipes, absolute paths and empty entries unchanged.
    """
    if not entry or is_pipe(entry):
        return entry
    ark = split_ark_offset(entry)
    path, suffix = (ark[0], f":{ark[1]}") if ark else (entry, "")
    if os.path.isabs(path):
        return entry
    in_root = Path(root) / path
    chosen = in_root if in_root.exists() or not Path(path).exists() else Path(path)
    return f"{os.path.abspath(chosen)}{suffix}"


def _parse_number(path: Path, line_no: int, key: str, value: str, kind: type) -> int | float:
    try:
        number = kind(value)
    except ValueError:
        raise DataDirError(
            path, line_no,
            f"{key}: expected {'an integer' if kind is int else 'a number'}, found {value!r}",
        ) from None
    if not number >= 0:  # also NaN
        raise DataDirError(path, line_no, f"{key}: expected a number >= 0, found {value}")
    return number


def _read_numbers(path: Path, kind: type) -> dict[str, int | float]:
    return {
        key: _parse_number(path, line_no, key, value, kind)
        for line_no, (key, value) in enumerate(read_table(path), start=1)
    }


def _read_segments(path: Path) -> dict[str, Segment]:
    segments = {}
    for line_no, (utt_id, value) in enumerate(read_table(path), start=1):
        fields = value.split()
        if len(fields) != 3:
            raise DataDirError(
                path, line_no, f"{utt_id}: expected '<utt> <recording> <start> <end>', "
                f"found {len(fields) + 1} fields"
            )
        start = _parse_number(path, line_no, utt_id, fields[1], float)
        try:
            end = float(fields[2])
        except ValueError:
            raise DataDirError(path, line_no, f"{utt_id}: bad end time {fields[2]!r}") from None
        if end >= 0 and end <= start:
            raise DataDirError(path, line_no, f"{utt_id}: end {end} must be after start {start}")
        segments[utt_id] = Segment(fields[0], start, None if end < 0 else end)
    return segments


@dataclasses.dataclass
class DataDir:
    """The contents of a Kaldi data directory.

    Attributes:
        wav_scp: recording id -> wav entry (file paths absolute once read).
        text: utterance id -> transcript, or ``None`` when the directory has no ``text``.
        utt2spk: utterance id -> speaker id, or ``None``.
        segments: utterance id -> :class:`Segment`, or ``None`` (then utterance = recording).
        utt2num_samples: utterance id -> length in samples at the audio's own rate, or ``None``.
        utt2dur: utterance id -> length in seconds, or ``None``.
        path: the folder it was read from, if any.
    """

    wav_scp: dict[str, str]
    text: dict[str, str] | None = None
    utt2spk: dict[str, str] | None = None
    segments: dict[str, Segment] | None = None
    utt2num_samples: dict[str, int] | None = None
    utt2dur: dict[str, float] | None = None
    path: Path | None = None

    @property
    def utt_ids(self) -> list[str]:
        """Sorted utterance ids: the keys of ``segments`` if present, else of ``wav.scp``."""
        return sorted(self.segments if self.segments is not None else self.wav_scp)

    def __len__(self) -> int:
        return len(self.segments if self.segments is not None else self.wav_scp)

    def wav_entry(self, utt_id: str) -> tuple[str, Segment | None]:
        """The wav entry that holds an utterance, and its segment if the directory has segments.

        Raises:
            KeyError: when the utterance (or its recording) is not in the directory.
        """
        if self.segments is None:
            return self.wav_scp[utt_id], None
        segment = self.segments[utt_id]
        return self.wav_scp[segment.recording_id], segment

    def subset(self, utt_ids: Iterable[str]) -> "DataDir":
        """A new DataDir restricted to ``utt_ids`` (recordings kept only if still used)."""
        keep = set(utt_ids)

        def pick(table):
            return None if table is None else {k: v for k, v in table.items() if k in keep}

        if self.segments is None:
            wav_scp = pick(self.wav_scp)
            segments = None
        else:
            segments = pick(self.segments)
            used = {seg.recording_id for seg in segments.values()}
            wav_scp = {k: v for k, v in self.wav_scp.items() if k in used}
        return DataDir(
            wav_scp=wav_scp,
            text=pick(self.text),
            utt2spk=pick(self.utt2spk),
            segments=segments,
            utt2num_samples=pick(self.utt2num_samples),
            utt2dur=pick(self.utt2dur),
            path=None,
        )


def read_data_dir(path: str | os.PathLike) -> DataDir:
    """Read a Kaldi data directory.

    Reading is tolerant of order (the validator reports unsorted files); a duplicate key keeps
    its last value. Optional files that are absent give ``None`` fields.

    Args:
        path: the directory.

    Returns:
        the :class:`DataDir`, with file paths of ``wav.scp`` made absolute.

    Raises:
        DataDirError: when the directory or ``wav.scp`` is missing, or a numeric field or a
            ``segments`` line does not parse.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataDirError(root, None, "not a directory; expected a Kaldi data directory")
    wav_scp = {key: resolve_entry(value, root) for key, value in read_table(root / "wav.scp")}

    def optional(name, reader):
        return reader(root / name) if (root / name).exists() else None

    return DataDir(
        wav_scp=wav_scp,
        text=optional("text", lambda p: dict(read_table(p))),
        utt2spk=optional("utt2spk", lambda p: dict(read_table(p))),
        segments=optional("segments", _read_segments),
        utt2num_samples=optional("utt2num_samples", lambda p: _read_numbers(p, int)),
        utt2dur=optional("utt2dur", lambda p: _read_numbers(p, float)),
        path=root,
    )


def write_data_dir(data: DataDir, path: str | os.PathLike) -> None:
    """Write a data directory: every present table sorted, plus ``spk2utt`` from ``utt2spk``.

    Files of tables that are ``None`` are removed from ``path`` if an older version is there, so
    the directory never mixes old and new tables.

    Args:
        data: what to write.
        path: the output directory (created if needed).
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict | None] = {
        "wav.scp": data.wav_scp,
        "text": data.text,
        "utt2spk": data.utt2spk,
        "segments": None if data.segments is None else {
            utt: f"{s.recording_id} {s.start:.3f} {-1 if s.end is None else f'{s.end:.3f}'}"
            for utt, s in data.segments.items()
        },
        "utt2num_samples": data.utt2num_samples,
        "utt2dur": None if data.utt2dur is None else {
            utt: f"{dur:.4f}" for utt, dur in data.utt2dur.items()
        },
    }
    for name, table in tables.items():
        if table is None:
            (root / name).unlink(missing_ok=True)
        else:
            write_table(root / name, table.items())
    if data.utt2spk is None:
        (root / "spk2utt").unlink(missing_ok=True)
    else:
        spk2utt: dict[str, list[str]] = {}
        for utt, spk in sorted(data.utt2spk.items()):
            spk2utt.setdefault(spk, []).append(utt)
        write_table(root / "spk2utt", ((spk, " ".join(utts)) for spk, utts in spk2utt.items()))
    logger.info("wrote %d utterances to %s", len(data), root)


def find_unsorted(keys: Sequence[str]) -> int | None:
    """Index of the first key that sorts before its predecessor (byte order), else ``None``.

    Python compares ``str`` by code point, which is the byte order of UTF-8, i.e. ``LC_ALL=C``.
    Duplicates are not disorder; find them separately.
    """
    for i in range(1, len(keys)):
        if keys[i] < keys[i - 1]:
            return i
    return None
