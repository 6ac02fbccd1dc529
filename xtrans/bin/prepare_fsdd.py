"""Connected-digit Kaldi data directories from the Free Spoken Digit Dataset (recipe stage 1).

Usage::

    # a local FSDD folder (holding recordings/<digit>_<speaker>_<take>.wav)
    python -m xtrans.bin.prepare_fsdd --fsdd_dir /data/fsdd --out data --num_train 2000 --num_dev 200

    # without --fsdd_dir: download the GitHub release into --download_dir first (not checksummed)
    python -m xtrans.bin.prepare_fsdd --download_dir downloads --out data

Writes ``<out>/{train,dev,test}`` (test only when the folder has the official test takes 0-4)
and the 16 kHz WAVs under ``<out>/wavs/<split>/``: every utterance joins 2-6 recordings of one
speaker with short pauses, e.g. ``george-train-00007 THREE ONE FOUR``. See
:mod:`xtrans.recipes.fsdd`. The result is derived from FSDD (CC BY-SA 4.0) and keeps its licence.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from tqdm import tqdm

from xtrans.recipes.download import ChecksumError, DownloadError, UnsafeArchiveError
from xtrans.recipes.fsdd import DEV_TAKES, TEST_TAKES, URL, FsddError, download_fsdd, parse_takes, prepare


def _takes_str(takes) -> str:
    return f"{takes[0]}-{takes[-1]}"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.prepare_fsdd", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--fsdd_dir", "--fsdd-dir", help="FSDD folder (recordings/ or the recordings themselves); "
                                                    "absent = download the release into --download_dir")
    p.add_argument("--download_dir", "--download-dir", default="downloads", help="where to download FSDD")
    p.add_argument("--url", default=URL, help="the FSDD .tar.gz archive to download")
    p.add_argument("--sha256", help="the archive's SHA-256, if known (none is published)")
    p.add_argument("--out", default="data", help="parent of the data directories")
    p.add_argument("--num_train", "--num-train", type=int, default=2000, help="training utterances")
    p.add_argument("--num_dev", "--num-dev", type=int, default=200, help="dev utterances")
    p.add_argument("--num_test", "--num-test", type=int, default=200,
                   help="test utterances (when the folder has the test takes)")
    p.add_argument("--seed", type=int, default=0, help="the corpus depends only on the options and the seed")
    p.add_argument("--dev_takes", "--dev-takes", default=_takes_str(DEV_TAKES),
                   help="takes held out for dev, e.g. 45-49 or 40,41")
    p.add_argument("--test_takes", "--test-takes", default=_takes_str(TEST_TAKES),
                   help="the official test takes")
    p.add_argument("--min_digits", "--min-digits", type=int, default=2)
    p.add_argument("--max_digits", "--max-digits", type=int, default=6)
    p.add_argument("--min_pause", "--min-pause", type=float, default=0.1, help="seconds between digits")
    p.add_argument("--max_pause", "--max-pause", type=float, default=0.4, help="seconds between digits")
    p.add_argument("--noise_level", "--noise-level", type=float, default=1e-3,
                   help="standard deviation of the pause noise (full scale 1)")
    p.add_argument("--part_peak", "--part-peak", type=float, default=0.5,
                   help="the peak every recording is scaled to (0 = as recorded)")
    p.add_argument("--no_progress", "--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    counts = {"train": args.num_train, "dev": args.num_dev, "test": args.num_test}
    try:
        if args.fsdd_dir:
            fsdd_dir = args.fsdd_dir
        else:
            fsdd_dir = download_fsdd(args.download_dir, args.url, args.sha256, progress=not args.no_progress)
            print(f"FSDD recordings are in {fsdd_dir}")
        with tqdm(total=sum(counts.values()), unit="utt", desc="fsdd", disable=args.no_progress) as bar:
            summaries = prepare(fsdd_dir, args.out, counts, seed=args.seed,
                                dev_takes=parse_takes(args.dev_takes), test_takes=parse_takes(args.test_takes),
                                min_digits=args.min_digits, max_digits=args.max_digits,
                                min_pause=args.min_pause, max_pause=args.max_pause,
                                noise_level=args.noise_level, part_peak=args.part_peak or None,
                                on_progress=bar.update)
    except (FsddError, ChecksumError, DownloadError, UnsafeArchiveError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for s in summaries.values():
        print(f"{s.out}: {s.utterances} utterances, {s.seconds / 3600:.2f} h, {s.speakers} speakers, "
              f"from {s.recordings} recordings")
    if counts["test"] and "test" not in summaries:
        print(f"no test set: {fsdd_dir} has no recordings of the test takes {args.test_takes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
