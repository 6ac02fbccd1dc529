"""Combine Kaldi data directories into one (e.g. LibriSpeech train-clean-100 + train-clean-360).

    python -m xtrans.bin.combine_data data/train data/train_clean_100 data/train_clean_360

Utterance ids must be unique across the inputs; a clash is an error naming the id and both inputs.
"""

from __future__ import annotations

import argparse
import sys

from xtrans.data.kaldi_dir import DataDir, DataDirError, read_data_dir, write_data_dir

TABLES = ("wav_scp", "text", "utt2spk", "segments", "utt2num_samples", "utt2dur")


def combine(dirs) -> DataDir:
    """Merges the tables of ``dirs``; a table missing in any input is dropped from the result."""
    parts = [(d, read_data_dir(d)) for d in dirs]
    merged, origin = {}, {}
    for name in TABLES:
        tables = [getattr(data, name) for _, data in parts]
        if any(t is None for t in tables):
            merged[name] = None
            continue
        out = {}
        for (path, _), table in zip(parts, tables):
            for key, value in table.items():
                if key in out and origin.get((name, key)) != path:
                    raise ValueError(f"utterance id {key!r} appears in both {origin[(name, key)]} and {path}")
                out[key] = value
                origin[(name, key)] = path
        merged[name] = out
    return DataDir(**merged)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest")
    p.add_argument("src", nargs="+")
    args = p.parse_args(argv)
    try:
        data = combine(args.src)
    except (DataDirError, OSError, ValueError) as err:
        print(f"combine_data: {err}", file=sys.stderr)
        return 2
    write_data_dir(data, args.dest)
    print(f"{args.dest}: {len(data.utt_ids)} utterances from {len(args.src)} directories")
    return 0


if __name__ == "__main__":
    sys.exit(main())
