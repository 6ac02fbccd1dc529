"""Write generated noise as WAV files and a ``noise.scp`` list (issue 19).

Usage::

    python -m xtrans.bin.make_noise --families sweeps,crackle --num 20 --seconds 10 --seed 99 \\
        --out exp/robustness/noise

Writes ``--num`` files of ``--seconds`` seconds at 16 kHz (16-bit PCM, peak at half full scale),
``<family>-<k>.wav``, the families taken in turn, file ``k`` drawn from
``numpy.random.default_rng([seed, k])`` (:func:`xtrans.data.augment.generate_noise`), and
``<out>/noise.scp`` with one ``<id> <path>`` line per file (paths as ``--out`` names them, so a
relative ``--out`` gives paths relative to where the command ran, as in Kaldi lists).

The default families are :data:`xtrans.data.augment.HELD_OUT_FAMILIES`, which training never
draws: the list is a noise the models have not heard, for ``python -m xtrans.bin.robustness
--noise_scp <out>/noise.scp`` (the same noise for every toolkit that reads the files). The exit
status is 2 for bad options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile
from tqdm import tqdm

from xtrans.data.augment import HELD_OUT_FAMILIES, generate_noise
from xtrans.data.augment.generated import check_families
from xtrans.frames import SAMPLE_RATE

PEAK = 0.5
"""Largest magnitude of a written file (the level does not matter: noise is mixed at an SNR)."""


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.make_noise", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--families", default=",".join(HELD_OUT_FAMILIES),
                   help="comma-separated noise families (xtrans.data.augment.generated), taken in turn")
    p.add_argument("--num", type=int, default=20, help="files to write")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each file")
    p.add_argument("--seed", type=int, default=99, help="file k is drawn from default_rng([seed, k])")
    p.add_argument("--out", required=True, help="folder for the WAV files and noise.scp")
    return p


def check_options(families: Sequence[str], num: int, seconds: float, seed: int) -> Tuple[str, ...]:
    """The families, checked with the other options.

    Raises:
        ValueError: naming the option for unknown families, ``num < 1``, ``seconds`` not > 0 or ``seed < 0``.
    """
    families = check_families(families, "--families")
    if num < 1:
        raise ValueError(f"--num: expected >= 1 files, found {num}")
    if not seconds > 0:
        raise ValueError(f"--seconds: expected > 0, found {seconds}")
    if seed < 0:
        raise ValueError(f"--seed: expected an integer >= 0, found {seed}")
    return families


def noise_files(families: Sequence[str], num: int, seconds: float, seed: int) -> Iterator[Tuple[str, np.ndarray]]:
    """``(id, samples)`` of every file (options checked by :func:`check_options`): ``(S,)`` float32
    at 16 kHz with peak :data:`PEAK`."""
    size = max(1, round(seconds * SAMPLE_RATE))
    for k in range(num):
        family = families[k % len(families)]
        x = generate_noise(family, size, np.random.default_rng([seed, k]))
        top = float(np.max(np.abs(x)))
        yield f"{family}-{k:04d}", (x * (PEAK / top) if top > 0 else x).astype(np.float32)


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        families = check_options([f.strip() for f in args.families.split(",") if f.strip()], args.num,
                                 args.seconds, args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for utt, samples in tqdm(noise_files(families, args.num, args.seconds, args.seed), total=args.num,
                             desc="noise", unit="file", file=sys.stderr):
        path = out / f"{utt}.wav"
        soundfile.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
        lines.append(f"{utt} {path}\n")
    (out / "noise.scp").write_text("".join(lines), encoding="utf-8")
    print(f"wrote {args.num} files of {args.seconds:g} s ({', '.join(families)}) and {out / 'noise.scp'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
