"""Download a file (resumable, checksum-verified) or a corpus, and extract archives safely.

Usage::

    # one file; --extract unpacks a .tar/.tar.gz into DIR after the checksum passed
    python -m xtrans.bin.download URL --out downloads/file.tar.gz [--md5 HEX | --sha256 HEX] [--extract DIR]

    # LibriSpeech parts (published MD5s) -> DEST/LibriSpeech/<part>/...
    python -m xtrans.bin.download --corpus librispeech --parts dev-clean,test-clean --dest downloads \\
        [--base_url https://us.openslr.org/resources/12] [--remove_archives]

An interrupted download resumes from ``<file>.part``; a file that fails its checksum is moved to
``<file>.corrupt`` with an error (exit status 1). Run again to continue or retry.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from xtrans.recipes import librispeech
from xtrans.recipes.download import ChecksumError, DownloadError, UnsafeArchiveError, download, extract_tar

CORPORA = ("librispeech",)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.download", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("url", nargs="?", help="http(s) address of one file")
    p.add_argument("--out", help="with URL: the file to write")
    p.add_argument("--md5", help="with URL: expected MD5 (hex)")
    p.add_argument("--sha256", help="with URL: expected SHA-256 (hex)")
    p.add_argument("--extract", metavar="DIR", help="with URL: extract the archive into DIR")
    p.add_argument("--corpus", choices=CORPORA, help="download parts of a corpus instead of one URL")
    p.add_argument("--parts", default="dev-clean,test-clean",
                   help=f"with --corpus librispeech: comma-separated, of {','.join(librispeech.PARTS)}")
    p.add_argument("--dest", default="downloads", help="with --corpus: folder for archives and the extracted tree")
    p.add_argument("--base_url", "--base-url", default=librispeech.BASE_URL, help="with --corpus: server folder")
    p.add_argument("--remove_archives", "--remove-archives", action="store_true",
                   help="with --corpus: delete each archive after extraction")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server")
    p.add_argument("--no_progress", "--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if (args.url is None) == (args.corpus is None):
        print("error: give either a URL (with --out) or --corpus", file=sys.stderr)
        return 2
    try:
        if args.corpus == "librispeech":
            root = librispeech.download_parts(args.parts, args.dest, args.base_url,
                                              keep_archives=not args.remove_archives, progress=not args.no_progress)
            print(f"LibriSpeech parts {args.parts} are in {root}/LibriSpeech")
            return 0
        if not args.out:
            print("error: URL needs --out FILE", file=sys.stderr)
            return 2
        path = download(args.url, args.out, md5=args.md5, sha256=args.sha256, timeout=args.timeout,
                        progress=not args.no_progress)
        if args.extract:
            extract_tar(path, args.extract, progress=not args.no_progress)
        print(f"{path}" + (f" extracted into {args.extract}" if args.extract else ""))
        return 0
    except (ChecksumError, DownloadError, UnsafeArchiveError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
