"""Measure what hotwords and LM fusion buy on a test set (issue 22; recipe stage 12).

Usage::

    python -m xtrans.bin.context_table --model exp/stage5/5a/best.pt --data dump/test \\
        --phrases data/phrases.txt [--lm data/lang_bpe/lm.arpa --lm_scales 0.1,0.2,0.3 --tune_data dump/dev] \\
        [--snr 10] [--noise_scp noise.scp] [--hotwords_score 1.5] [--list_size 10] [--draws 1] [--seed 12345] \\
        [--beam 4] [--nj 2] [--out exp/context.json] [--plot exp/plots/context.png] [--markdown context.md]

Every model is decoded with modified beam search under its training mask (or ``--chunk_ms``),
in simulated mode, as :mod:`xtrans.scoring.context` describes: the **commands** of ``--data``
(utterances whose transcript is a phrase of ``--phrases``) in noise at ``--snr`` — no context, each
with a list of ``--list_size`` phrases containing its own, with a list of distractors, with the LM
— and the whole set in that noise and clean (no context, distractors, LM). The noise is that of
``python -m xtrans.bin.robustness``: a recording of ``--noise_scp`` per utterance, or generated
noise of the families training never draws, drawn with the same seeds. With ``--tune_data``, the
LM's scale is the one of ``--lm_scales`` with the lowest WER of the first model on that (clean) set.
With ``--draws N`` every utterance gets N independent right and distractor lists, each decoded, and
their errors are pooled: one draw's reading moves by about a point with the lists' seed on a test
set of 150 utterances.

Prints the table; ``--out`` writes the JSON report, ``--plot`` a bar chart, ``--markdown`` the
``RESULTS.md`` section. Exit status 2 for bad options, 1 when an utterance could not be decoded.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from typing import Any, Dict, List, Optional, Tuple

import torch
from tqdm import tqdm

from xtrans.context import DEFAULT_HOTWORDS_SCORE
from xtrans.data.kaldi_dir import DataDirError, read_data_dir
from xtrans.decoding.data_dir import run as decode_records
from xtrans.decoding.data_dir import worker_pool
from xtrans.decoding.measure import add_model_options, load, model_jobs, write_outputs
from xtrans.scoring.context import (LIST_SIZE, command_utts, format_table, hotword_lists, read_phrases,
                                    results_section)
from xtrans.scoring.level import gain_score
from xtrans.scoring.plots import plot_context
from xtrans.scoring.robustness import DEFAULT_SEED, Setup
from xtrans.scoring.wer import ErrorCounts, score


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.context_table", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_options(p, plot_help="write a bar chart of WER per context, one group per model and set, here")
    p.set_defaults(search="beam")
    p.add_argument("--phrases", required=True, help="the phrase inventory (one phrase per line): the commands")
    p.add_argument("--lm", default=None, help="an ARPA LM over the tokenizer's pieces (python -m xtrans.bin.train_lm)")
    p.add_argument("--lm_scales", "--lm-scales", default="0.1,0.2,0.3",
                   help="with --tune_data: the LM scales tried; else the first is used")
    p.add_argument("--tune_data", "--tune-data", default=None,
                   help="a Kaldi dir (e.g. dump/dev) on which the LM scale is chosen")
    p.add_argument("--snr", type=float, default=10.0, help="SNR (dB) of the noisy sets")
    p.add_argument("--noise_scp", "--noise-scp", default=None,
                   help="'<id> <wav entry>' list of noises; default: generated noise of the held-out families")
    p.add_argument("--hotwords_score", "--hotwords-score", type=float, default=DEFAULT_HOTWORDS_SCORE,
                   help="per-token boost of the hotwords")
    p.add_argument("--list_size", "--list-size", type=int, default=LIST_SIZE, help="phrases per hotword list")
    p.add_argument("--draws", type=int, default=1,
                   help="independent right and distractor lists per utterance, their errors pooled")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the lists and of the noise draws")
    return p


def _scales(text: str) -> List[float]:
    try:
        scales = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        scales = []
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"--lm_scales: expected a comma-separated list of positive numbers, found {text!r}")
    return scales


class Measure:
    """Decodes and scores one configuration on a subset (the job's options with ``changes``)."""

    def __init__(self, data, refs: Dict[str, str], pool):
        self.data, self.refs, self.pool = data, refs, pool
        self.failed = 0

    def __call__(self, job: Dict[str, Any], s2t, utts: List[str], label: str, transform=None,
                 hotwords: Optional[Dict[str, List[str]]] = None, hotwords_score: Optional[float] = None,
                 **changes: Any) -> Dict[str, Any]:
        options = job["decode"]
        if changes:
            options = copy.copy(options)
            vars(options).update(changes)
            s2t = None if self.pool is not None else load({**job, "decode": options})
        records = decode_records(options, self.data, s2t, self.pool, transform=transform, hotwords=hotwords,
                                 hotwords_score=hotwords_score, utts=utts, progress=False)
        errors = [r for r in records if "error" in r]
        for r in errors:
            tqdm.write(f"error: {r['utt']} ({job['tag']}, {label}): {r['error']}", file=sys.stderr)
        self.failed += len(errors)
        refs = {u: self.refs[u] for u in utts}
        return gain_score(score(refs, {r["utt"]: r["text"] for r in records}).counts, failed=len(errors))


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.num_threads)
    try:
        if args.search != "beam":
            raise ValueError("--search: hotwords and LM fusion need modified beam search (beam)")
        if args.list_size < 1:
            raise ValueError(f"--list_size: expected >= 1, found {args.list_size}")
        if args.draws < 1:
            raise ValueError(f"--draws: expected >= 1, found {args.draws}")
        scales = _scales(args.lm_scales)
        if args.tune_data is not None and args.lm is None:
            raise ValueError("--tune_data: expected --lm with it (it chooses the LM's scale)")
        phrases = read_phrases(args.phrases, args.list_size)
        data = read_data_dir(args.data)
        if data.text is None:
            raise ValueError(f"--data: {args.data} has no text file; nothing to score against")
        tune = read_data_dir(args.tune_data) if args.tune_data is not None else None
        if tune is not None and tune.text is None:
            raise ValueError(f"--tune_data: {args.tune_data} has no text file")
        setup = Setup(data_dir=str(args.data), seed=args.seed, noise_scp=args.noise_scp)
        setup.check(["noise"], {"noise": [args.snr]}, len(data.utt_ids))
        for job in (jobs := model_jobs(args)):
            vars(job["decode"]).update(lm=None, lm_scale=scales[0], hotwords=None, hotwords_score=args.hotwords_score)
        models = [load(job) for job in jobs]
        phrases, unspelled = spellable(phrases, models[0])
        if len(phrases) < args.list_size + 1:
            raise ValueError(f"--phrases: expected at least {args.list_size + 1} phrases the model's tokens can "
                             f"spell, found {len(phrases)} (not spelled: {', '.join(unspelled)})")
        if unspelled:
            print(f"warning: --phrases: {len(unspelled)} phrases the model's tokens cannot spell are left out: "
                  f"{', '.join(unspelled)}", file=sys.stderr)
        if args.lm is not None:  # the LM loads (a bad file fails here, before decoding)
            load({**jobs[0], "decode": argparse.Namespace(**{**vars(jobs[0]["decode"]), "lm": args.lm})})
    except (ValueError, FileNotFoundError, DataDirError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    utts = [u for u in data.utt_ids if u in data.text]
    refs = {u: data.text[u] for u in utts}
    commands = command_utts(utts, refs, phrases)
    draws = [hotword_lists(utts, refs, phrases, seed=args.seed, list_size=args.list_size, draw=d)
             for d in range(args.draws)]
    noise = setup.options("noise", args.snr)["transform"]
    report: Dict[str, Any] = {
        "data": str(args.data), "num_utts": len(utts), "num_commands": len(commands), "phrases": str(args.phrases),
        "num_phrases": len(phrases), "unspelled": unspelled, "list_size": args.list_size, "draws": args.draws,
        "hotwords_score": args.hotwords_score,
        "seed": args.seed, "snr_db": args.snr, "beam": args.beam,
        "noise": setup.describe("noise", [args.snr])["description"].rstrip("."), "lm": None, "models": []}
    pool = worker_pool(args.nj) if args.nj > 1 else None
    try:
        if args.lm is not None:
            report["lm"] = choose_scale(args, jobs[0], models[0], tune, scales, pool)
        measure = Measure(data, refs, pool)
        lm = {} if args.lm is None else {"lm": args.lm, "lm_scale": report["lm"]["scale"]}
        plan = [("commands_noisy", commands, noise, ("none", "right", "distractors", "lm")),
                ("all_noisy", utts, noise, ("none", "distractors", "lm")),
                ("all_clean", utts, None, ("none", "distractors", "lm"))]
        runs = {"none": 1, "right": args.draws, "distractors": args.draws, "lm": 1 if lm else 0}
        todo = sum(runs[c] for name, subset, _, cs in plan if subset for c in cs) * len(jobs)
        bar = tqdm(total=todo, desc="context", unit="decoding", file=sys.stderr)
        for job, s2t in zip(jobs, models):
            wer: Dict[str, Dict[str, Any]] = {}
            for name, subset, transform, contexts in plan:
                if not subset:
                    continue
                cells = wer[name] = {}
                for c in contexts:
                    if c == "lm" and not lm:
                        continue
                    entries = []
                    for d in range(runs[c]):
                        of = f" {d + 1}/{runs[c]}" if runs[c] > 1 else ""
                        bar.set_postfix_str(f"{job['tag']}: {name}, {c}{of}")
                        lists = {"right": draws[d][0], "distractors": draws[d][1]}.get(c)
                        entries.append(measure(job, s2t, subset, f"{name}, {c}", transform,
                                               hotwords=None if lists is None else {u: lists[u] for u in subset},
                                               hotwords_score=args.hotwords_score, **(lm if c == "lm" else {})))
                        bar.update()
                    cells[c] = pooled(entries)
            d = job["decode"]
            report["models"].append({"tag": job["tag"], "checkpoint": str(job["checkpoint"]),
                                     "streaming": job["streaming"], "search": d.search, "beam": d.beam, "wer": wer})
        bar.close()
    finally:
        if pool is not None:
            pool.shutdown()
    print(format_table(report), end="", flush=True)
    written = write_outputs(args, report, plot_context, results_section)
    if written:
        print(f"wrote {', '.join(written)}")
    return 1 if measure.failed else 0


def pooled(entries: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One WER entry (:func:`~xtrans.scoring.level.gain_score`'s) of several decodings of the same
    utterances: their word counts and failures summed."""
    counts = ErrorCounts(ref_words=sum(e["words"] for e in entries), sub=sum(e["sub"] for e in entries),
                         dele=sum(e["del"] for e in entries), ins=sum(e["ins"] for e in entries))
    return gain_score(counts, failed=sum(e["failed"] for e in entries))


def spellable(phrases: List[str], s2t) -> Tuple[List[str], List[str]]:
    """The phrases a recognizer's tokens can spell as hotwords, and those they cannot."""
    ok, unspelled = [], []
    for phrase in phrases:
        try:
            s2t.context.graph([phrase])
            ok.append(phrase)
        except ValueError:
            unspelled.append(phrase)
    return ok, unspelled


def choose_scale(args: argparse.Namespace, job: Dict[str, Any], s2t, tune, scales: List[float], pool) -> Dict[str, Any]:
    """The LM entry of the report: its path and scale; with ``--tune_data`` the scale of ``scales``
    with the lowest WER of ``job``'s model on that set (the smaller on a tie), and every WER."""
    entry: Dict[str, Any] = {"path": str(args.lm), "scale": scales[0], "scales": scales}
    if tune is None:
        return entry
    refs = {u: tune.text[u] for u in tune.utt_ids if u in tune.text}
    measure = Measure(tune, refs, pool)
    utts = list(refs)
    without = measure(job, s2t, utts, "tuning, no LM")["wer"]
    dev = [measure(job, s2t, utts, f"tuning, LM scale {s:g}", lm=args.lm, lm_scale=s)["wer"] for s in tqdm(
        scales, desc="LM scale", unit="scale", file=sys.stderr)]
    best = min(range(len(scales)), key=lambda k: (dev[k], scales[k]))
    entry.update(scale=scales[best], tuned_on=str(args.tune_data), dev_wer=dev, dev_wer_without=without)
    return entry


if __name__ == "__main__":
    sys.exit(main())
