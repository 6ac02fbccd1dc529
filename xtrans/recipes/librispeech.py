"""LibriSpeech (OpenSLR 12): download, and Kaldi data directories from the extracted tree.

The corpus, as extracted from ``<part>.tar.gz``::

    <root>/LibriSpeech/<part>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <root>/LibriSpeech/<part>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   (<utt id> <TEXT> per line)

:func:`prepare_part` writes ``<out>/<part with _>`` (e.g. ``data/dev_clean``): ``wav.scp``
(utterance -> absolute FLAC path), ``text``, ``utt2spk`` (speaker = ``<speaker>-<chapter>``, as
Kaldi's ``local/data_prep.sh``, so utterance ids start with their speaker id), ``spk2utt`` and
``utt2num_samples``, all sorted.

The MD5 checksums are those of OpenSLR's ``resources/12/md5sum.txt``; the same values appear in
several independent public LibriSpeech download scripts (e.g. PaddlePaddle DeepSpeech's
``librispeech.py``). If a download fails its check, compare with
https://www.openslr.org/resources/12/md5sum.txt before suspecting the file.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Union

import soundfile

from xtrans.data.kaldi_dir import DataDir, write_data_dir
from xtrans.recipes.download import download, extract_tar

logger = logging.getLogger(__name__)

BASE_URL = "https://www.openslr.org/resources/12"
"""OpenSLR's LibriSpeech folder. Mirrors: https://us.openslr.org/resources/12,
https://openslr.elda.org/resources/12, https://openslr.magicdatatech.com/resources/12."""

PARTS: Dict[str, str] = {
    # part: md5 of <part>.tar.gz (OpenSLR resources/12/md5sum.txt)
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500": "d1a0fd59409feb2c614ce4d30c387708",
}

_UTT_RE = re.compile(r"^(\d+)-(\d+)-(\d+)$")


class LibriSpeechError(ValueError):
    """The extracted tree is not as LibriSpeech lays it out; ``path`` and ``reason`` say where and how."""

    def __init__(self, path: Union[str, os.PathLike], reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def parse_parts(parts: Union[str, Sequence[str]]) -> List[str]:
    """``"dev-clean,test-clean"`` or a list -> checked part names (``dev_clean`` spelling accepted).

    Raises:
        ValueError: on an unknown part, naming the known ones.
    """
    names = parts.split(",") if isinstance(parts, str) else list(parts)
    out = []
    for name in (n.strip().replace("_", "-") for n in names):
        if not name:
            continue
        if name not in PARTS:
            raise ValueError(f"parts: unknown LibriSpeech part {name!r}; expected some of {', '.join(PARTS)}")
        out.append(name)
    if not out:
        raise ValueError("parts: expected at least one LibriSpeech part")
    return out


def download_parts(parts: Union[str, Sequence[str]], dest: Union[str, os.PathLike], base_url: str = BASE_URL,
                   keep_archives: bool = True, progress: bool = True) -> Path:
    """Downloads (resumable, MD5-checked) and extracts parts into ``dest`` -> ``dest/LibriSpeech/<part>``.

    Args:
        keep_archives: keep ``dest/<part>.tar.gz`` after extraction (False deletes it).

    Returns:
        ``dest``, the ``--root`` of :func:`prepare`.
    """
    dest = Path(dest)
    for part in parse_parts(parts):
        archive = dest / f"{part}.tar.gz"
        if (dest / f".{archive.name}.done").exists():
            logger.info("%s: already extracted", part)
            continue
        download(f"{base_url.rstrip('/')}/{part}.tar.gz", archive, md5=PARTS[part], progress=progress)
        extract_tar(archive, dest, progress=progress)
        if not keep_archives:
            archive.unlink()
    return dest


@dataclass
class PartSummary:
    """What :func:`prepare_part` wrote."""

    part: str
    out: Path
    utterances: int
    speakers: int
    seconds: float


def _read_trans(path: Path) -> Dict[str, str]:
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        utt, _, text = line.strip().partition(" ")
        if not _UTT_RE.match(utt):
            raise LibriSpeechError(path, f"line {n}: expected '<speaker>-<chapter>-<utt> TEXT', found {line!r}")
        out[utt] = " ".join(text.split())
    return out


def prepare_part(root: Union[str, os.PathLike], part: str, out: Union[str, os.PathLike],
                 num_samples: bool = True) -> PartSummary:
    """Writes the Kaldi data directory of one part (see the module docstring).

    Args:
        root: folder holding ``LibriSpeech/<part>`` (or ``<part>`` directly).
        part: e.g. ``dev-clean``.
        out: the data directory to write (e.g. ``data/dev_clean``).
        num_samples: also write ``utt2num_samples`` (reads every FLAC header).

    Raises:
        LibriSpeechError: when the part is missing, a transcript line is malformed or names an
            utterance of another chapter, a FLAC has no transcript line or a line has no FLAC.
    """
    root = Path(root)
    part_dir = root / "LibriSpeech" / part
    if not part_dir.is_dir():
        part_dir = root / part
    if not part_dir.is_dir():
        raise LibriSpeechError(root / "LibriSpeech" / part, "no such folder; download and extract the part "
                                                            "first (python -m xtrans.bin.download --corpus librispeech)")
    wav_scp: Dict[str, str] = {}
    text: Dict[str, str] = {}
    utt2spk: Dict[str, str] = {}
    lengths: Dict[str, int] = {}
    seconds = 0.0
    for trans in sorted(part_dir.glob("*/*/*.trans.txt")):
        chapter_dir = trans.parent
        prefix = f"{chapter_dir.parent.name}-{chapter_dir.name}"
        if trans.name != f"{prefix}.trans.txt":
            raise LibriSpeechError(trans, f"expected the name {prefix}.trans.txt in {chapter_dir}")
        lines = _read_trans(trans)
        flacs = {p.stem: p for p in chapter_dir.glob("*.flac")}
        for utt in sorted(lines):
            if not utt.startswith(prefix + "-"):
                raise LibriSpeechError(trans, f"utterance {utt} does not belong to chapter {prefix}")
            if utt not in flacs:
                raise LibriSpeechError(chapter_dir / f"{utt}.flac", "transcribed, but the file is missing")
        extra = sorted(set(flacs) - set(lines))
        if extra:
            raise LibriSpeechError(flacs[extra[0]], f"no line in {trans.name} ({len(extra)} such file(s))")
        for utt in lines:
            wav_scp[utt] = str(flacs[utt].resolve())
            text[utt] = lines[utt]
            utt2spk[utt] = prefix
            if num_samples:
                info = soundfile.info(str(flacs[utt]))
                lengths[utt] = int(info.frames)
                seconds += info.frames / info.samplerate
    if not wav_scp:
        raise LibriSpeechError(part_dir, "no <speaker>/<chapter>/*.trans.txt found")
    write_data_dir(DataDir(wav_scp=wav_scp, text=text, utt2spk=utt2spk,
                           utt2num_samples=lengths if num_samples else None), out)
    summary = PartSummary(part, Path(out), len(wav_scp), len(set(utt2spk.values())), seconds)
    logger.info("%s: %d utterances, %d speakers, %.2f h -> %s", part, summary.utterances, summary.speakers,
                seconds / 3600, out)
    return summary


def prepare(root: Union[str, os.PathLike], parts: Union[str, Sequence[str]], out: Union[str, os.PathLike],
            num_samples: bool = True) -> List[PartSummary]:
    """:func:`prepare_part` for every part, into ``out/<part with _>`` (``data/dev_clean``, ...)."""
    return [prepare_part(root, p, Path(out) / p.replace("-", "_"), num_samples) for p in parse_parts(parts)]
