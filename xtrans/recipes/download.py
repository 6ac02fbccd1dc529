"""Resumable HTTP(S) downloads with checksum verification, and safe ``.tar.gz`` extraction.

::

    path = download("https://www.openslr.org/resources/12/dev-clean.tar.gz", "downloads/dev-clean.tar.gz",
                    md5="42e2234ba48799c1f50f24a7926300a1")
    extract_tar(path, "downloads")            # -> downloads/LibriSpeech/dev-clean/...

A download writes ``<file>.part`` and renames it to ``<file>`` only once the checksum matches.
An interrupted download is resumed from the ``.part`` file with an HTTP ``Range`` request (a
server that ignores it answers 200 and the file is fetched afresh). A file whose checksum does
not match is moved to ``<file>.corrupt`` and :class:`ChecksumError` says so; running again
downloads it afresh. An existing ``<file>`` is verified and kept when it matches.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Optional, Union

from tqdm import tqdm

logger = logging.getLogger(__name__)

BLOCK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed; ``url`` and ``reason`` say which and why."""

    def __init__(self, url: str, reason: str):
        self.url, self.reason = url, reason
        super().__init__(f"{url}: {reason}")


class ChecksumError(ValueError):
    """A file's checksum differs from the published one.

    Attributes:
        path: the file checked (moved to ``moved_to`` when given).
        algorithm: ``md5`` or ``sha256``.
        expected, found: hex digests.
        moved_to: where the bad file was moved, or None.
    """

    def __init__(self, path: Union[str, os.PathLike], algorithm: str, expected: str, found: str,
                 moved_to: Optional[Union[str, os.PathLike]] = None):
        self.path, self.algorithm, self.expected, self.found = str(path), algorithm, expected, found
        self.moved_to = None if moved_to is None else str(moved_to)
        where = f"; moved it to {self.moved_to}, run again to download it afresh" if moved_to else ""
        super().__init__(f"{path}: {algorithm} checksum mismatch (expected {expected}, found {found}): "
                         f"the file is corrupt or incomplete{where}")


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the target folder (or is a device/link)."""

    def __init__(self, archive: Union[str, os.PathLike], member: str, reason: str):
        self.archive, self.member, self.reason = str(archive), member, reason
        super().__init__(f"{archive}: refusing to extract {member!r}: {reason}")


def _checksum_spec(md5: Optional[str], sha256: Optional[str]):
    if md5 and sha256:
        raise ValueError("md5/sha256: give one checksum, not both")
    if md5:
        if not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
            raise ValueError(f"md5: expected 32 hex digits, found {md5!r}")
        return "md5", md5.lower()
    if sha256:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise ValueError(f"sha256: expected 64 hex digits, found {sha256!r}")
        return "sha256", sha256.lower()
    return None, None


def file_digest(path: Union[str, os.PathLike], algorithm: str = "md5") -> str:
    """Hex digest of a file (``md5`` or ``sha256``)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: Union[str, os.PathLike], md5: Optional[str] = None, sha256: Optional[str] = None,
                    move_bad: bool = False, bad_path: Optional[Union[str, os.PathLike]] = None) -> bool:
    """Checks a file against ``md5`` or ``sha256``; True when none is given or it matches.

    Args:
        move_bad: on a mismatch, move the file to ``bad_path`` (default ``<path>.corrupt``).

    Raises:
        ChecksumError: on a mismatch.
    """
    algorithm, expected = _checksum_spec(md5, sha256)
    if algorithm is None:
        return True
    found = file_digest(path, algorithm)
    if found == expected:
        return True
    moved = None
    if move_bad:
        moved = Path(bad_path) if bad_path is not None else Path(str(path) + ".corrupt")
        os.replace(path, moved)
    raise ChecksumError(path, algorithm, expected, found, moved)


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "xtrans-download/1"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) only, checked by caller


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Fetches ``url`` into ``part``, appending to what is there when the server honours ``Range``."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left past our offset: the .part is complete (or bad)
            logger.info("%s: server has no bytes past %d; checking the partial file", url, offset)
            return
        raise DownloadError(url, f"HTTP {err.code} {err.reason}") from None
    with response:
        status = response.status
        if offset and status == 206:
            m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                raise DownloadError(url, f"asked for bytes from {offset}, the server sent "
                                         f"{response.headers.get('Content-Range')!r}")
            total = None if m.group(3) == "*" else int(m.group(3))
            mode = "ab"
            logger.info("%s: resuming at byte %d", url, offset)
        elif status == 200:
            if offset:
                logger.info("%s: server does not resume (HTTP 200); downloading afresh", url)
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        else:
            raise DownloadError(url, f"unexpected HTTP status {status}")
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=Path(part.name[:-5]).name,
                                         disable=not progress) as bar:
            for block in iter(lambda: response.read(BLOCK), b""):
                f.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(url, f"connection ended at byte {size} of {total}; run again to resume")


def download(url: str, dest: Union[str, os.PathLike], *, md5: Optional[str] = None,
             sha256: Optional[str] = None, timeout: float = 60.0, retries: int = 3,
             retry_wait: float = 2.0, progress: bool = True) -> Path:
    """Downloads ``url`` to ``dest`` (see the module docstring for ``.part``, resume and checksums).

    Args:
        url: an ``http://`` or ``https://`` address.
        dest: the file to write (parent folders are created).
        md5, sha256: the published checksum (at most one); None = no verification.
        timeout: seconds to wait for the server on each request.
        retries: further attempts after a network error, each resuming the ``.part`` file.
        retry_wait: seconds before the first retry (doubled each time).
        progress: show a tqdm progress bar.

    Returns:
        ``dest``.

    Raises:
        ValueError: for a bad URL or checksum string.
        DownloadError: when the server refuses or the connection keeps failing.
        ChecksumError: when the downloaded (or existing) file does not match.
    """
    if not re.match(r"^https?://", url):
        raise ValueError(f"url: expected an http:// or https:// address, found {url!r}")
    _checksum_spec(md5, sha256)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        verify_checksum(dest, md5, sha256, move_bad=True)
        logger.info("%s: already there%s", dest, " (checksum ok)" if md5 or sha256 else "")
        return dest
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout, progress)
            break
        except (urllib.error.URLError, OSError, http.client.HTTPException, DownloadError) as err:
            if isinstance(err, DownloadError) and "HTTP 4" in err.reason:
                raise
            if attempt == retries:
                if isinstance(err, DownloadError):
                    raise
                raise DownloadError(url, f"{type(err).__name__}: {err}") from None
            wait = retry_wait * 2 ** attempt
            logger.warning("%s: %s; retrying in %.0f s", url, err, wait)
            time.sleep(wait)
    verify_checksum(part, md5, sha256, move_bad=True, bad_path=dest.with_name(dest.name + ".corrupt"))
    os.replace(part, dest)
    return dest


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    name = member.name
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(archive, name, "absolute path")
    if ".." in pure.parts:
        raise UnsafeArchiveError(archive, name, "path goes up with '..'")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        base = pure.parent if member.issym() else PurePosixPath()
        if target.is_absolute() or ".." in (base / target).parts:
            raise UnsafeArchiveError(archive, name, f"link to {member.linkname!r} outside the folder")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(archive, name, "not a regular file, folder or link")


def extract_tar(archive: Union[str, os.PathLike], dest: Union[str, os.PathLike], *, force: bool = False,
                progress: bool = True) -> Path:
    """Extracts a ``.tar``/``.tar.gz`` archive into ``dest`` safely.

    Every member is checked first: absolute paths, ``..`` components, links pointing outside
    ``dest`` and device files are refused (:class:`UnsafeArchiveError`, nothing is written), and
    the extraction itself uses :func:`tarfile.data_filter` where Python has it. A marker
    ``dest/.<archive name>.done`` makes a second call a no-op (unless ``force``).

    Returns:
        ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    marker = dest / f".{archive.name}.done"
    if marker.exists() and not force:
        logger.info("%s: already extracted into %s", archive, dest)
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(archive, member)
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        for member in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress):
            tar.extract(member, dest, **kwargs)
    marker.write_text("")
    return dest


__all__ = ["ChecksumError", "DownloadError", "UnsafeArchiveError", "download", "extract_tar", "file_digest",
           "verify_checksum"]
