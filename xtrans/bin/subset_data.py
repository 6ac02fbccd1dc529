"""Copy the first N utterances of a Kaldi data directory (``--debug`` runs of the recipes).

    python -m xtrans.bin.subset_data --n 60 data/train data/train_debug

The utterances are spread evenly over the sorted ids (every k-th), so a subset keeps the
variety of speakers of a directory sorted by speaker.
"""

from __future__ import annotations

import argparse
import sys

from xtrans.data.kaldi_dir import DataDirError, read_data_dir, write_data_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, required=True, help="utterances to keep")
    p.add_argument("src")
    p.add_argument("dest")
    args = p.parse_args(argv)
    if args.n < 1:
        print(f"subset_data: --n: expected >= 1, found {args.n}", file=sys.stderr)
        return 2
    try:
        data = read_data_dir(args.src)
    except (DataDirError, OSError) as err:
        print(f"subset_data: {err}", file=sys.stderr)
        return 2
    ids = data.utt_ids
    step = max(1, len(ids) // args.n)
    keep = ids[::step][: args.n]
    write_data_dir(data.subset(keep), args.dest)
    print(f"{args.dest}: {len(keep)} of {len(ids)} utterances")
    return 0


if __name__ == "__main__":
    sys.exit(main())
