"""From-scratch front-end study: how fast each CNN normalisation leaves the all-blank plateau.

Trains the demo's small transducer (the ``mini`` encoder preset with the chosen front end,
stateless predictor, auxiliary CTC) from random weights on a prepared corpus, once per
``--extractors`` entry, with the same batches in the same order, and measures greedy-search
WER on a held-out set every ``--eval_every`` seconds of training (evaluation time excluded).
Prints one table and writes JSON: per extractor, updates, audio seconds trained per second,
and WER and blank-only share at each evaluation.

The question it answers is the demo's (issue 5 of the project): which streamable front end
gets usable WER within a CPU budget of minutes. Runs under the same thread count are
comparable; for a side-by-side in one run use ``--parallel`` (one process per extractor,
``--threads`` each).

Usage (after ``egs/mini_synth/asr1/run.sh --stop_stage 3``)::

    python bench/frontend_study.py --recipe egs/mini_synth/asr1 --minutes 6 \\
        --extractors batch_norm,cumulative_norm,group_norm [--pos_conv none] [--parallel]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import random
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

from xtrans.data.dataset import AsrDataset, Example, collate
from xtrans.models.arch import ModelArch, StatelessPredictorArch, encoder_arch
from xtrans.models.config import encoder_defaults
from xtrans.models.config import build_model
from xtrans.models.wav2vec2.presets import preset_kwargs
from xtrans.scoring.wer import align
from xtrans.search.greedy import greedy_search
from xtrans.tokenizer import Tokenizer


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="egs/mini_synth/asr1", help="recipe folder with dump/ and data/lang_bpe")
    p.add_argument("--train", default="dump/train_clean", help="training data dir, relative to --recipe")
    p.add_argument("--test", default="dump/test", help="evaluation data dir, relative to --recipe")
    p.add_argument("--extractors", default="batch_norm,cumulative_norm,group_norm",
                   help="comma-separated extractor modes (layer_norm, group_norm, cumulative_norm, batch_norm)")
    p.add_argument("--pos_conv", default="none", help="positional convolution mode")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up updates, then constant")
    p.add_argument("--ctc_weight", type=float, default=1.0)
    p.add_argument("--max_seconds", type=float, default=30.0, help="padded seconds per batch")
    p.add_argument("--minutes", type=float, default=6.0, help="training time per extractor")
    p.add_argument("--eval_every", type=float, default=90.0, help="seconds of training between evaluations")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel", action="store_true", help="train the extractors at the same time")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="bench/results/frontend_study.json")
    return p


def load(recipe: Path, data_dir: str, tokenizer: Tokenizer) -> List[Example]:
    ds = AsrDataset(recipe / data_dir, tokenizer)
    return [ds[i] for i in range(len(ds))]


def make_batches(data: List[Example], max_seconds: float, rng: random.Random) -> List[List[int]]:
    """Length-sorted batches of at most ``max_seconds`` padded audio, in shuffled order."""
    order = sorted(range(len(data)), key=lambda i: len(data[i].waveform))
    batches, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * len(data[i].waveform) > max_seconds * 16000:
            batches.append(cur)
            cur = []
        cur.append(i)
    batches.append(cur)
    rng.shuffle(batches)
    return batches


def evaluate(model, test: List[Example], tokenizer: Tokenizer) -> Dict[str, float]:
    model.eval()
    errors = words = blank_only = 0
    with torch.no_grad():
        for ids in make_batches(test, 60.0, random.Random(0)):
            batch = collate([test[i] for i in ids])
            enc, enc_lengths = model.encode(batch.waveforms, batch.waveform_lengths)
            for i, hyp in zip(ids, greedy_search(model, enc, enc_lengths)):
                ref = tokenizer.decode(test[i].targets.tolist()).split()
                errors += align(ref, tokenizer.decode(hyp.tokens).split()).counts.errors
                words += len(ref)
                blank_only += not hyp.tokens
    model.train()
    return {"wer": errors / max(words, 1), "blank_only": blank_only / len(test)}


def run_one(args: argparse.Namespace, extractor: str) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    recipe = Path(args.recipe)
    tokenizer = Tokenizer(recipe / "data/lang_bpe/bpe.model")
    train, test = load(recipe, args.train, tokenizer), load(recipe, args.test, tokenizer)
    arch = preset_kwargs("mini", extractor_mode=extractor, pos_conv=args.pos_conv, waveform_norm="none")
    model = build_model(ModelArch(encoder=encoder_arch({**encoder_defaults(), **arch}),
                                  predictor=StatelessPredictorArch(embed_dim=64, context_size=2),
                                  vocab_size=tokenizer.vocab_size, joiner_dim=128, ctc_weight=args.ctc_weight))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    rng = random.Random(args.seed)
    evals, updates, audio, trained = [], 0, 0.0, 0.0
    next_eval = args.eval_every
    while trained < args.minutes * 60:
        for ids in make_batches(train, args.max_seconds, rng):
            start = time.perf_counter()
            batch = collate([train[i] for i in ids])
            for group in opt.param_groups:
                group["lr"] = args.lr * min(1.0, (updates + 1) / max(args.warmup, 1))
            loss = model(batch.waveforms, batch.waveform_lengths, batch.targets, batch.target_lengths).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            updates += 1
            audio += float(batch.waveform_lengths.sum()) / 16000
            trained += time.perf_counter() - start
            if trained >= next_eval or trained >= args.minutes * 60:
                evals.append(dict(updates=updates, minutes=trained / 60, **evaluate(model, test, tokenizer)))
                print(f"{extractor:>16}  update {updates:5d}  {trained / 60:5.1f} min  "
                      f"WER {evals[-1]['wer']:.3f}  blank-only {evals[-1]['blank_only']:.2f}", flush=True)
                next_eval += args.eval_every
                if trained >= args.minutes * 60:
                    break
    return dict(extractor=extractor, updates=updates, audio_per_second=audio / trained, evals=evals)


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    extractors = [e for e in args.extractors.split(",") if e]
    if args.parallel:
        with mp.get_context("fork").Pool(len(extractors)) as pool:
            results = pool.starmap(run_one, [(args, e) for e in extractors])
    else:
        results = [run_one(args, e) for e in extractors]
    print(f"\n{'extractor':>16} | updates | audio s/s | " + " | ".join(
        f"WER@{e['minutes']:.1f}min" for e in results[0]["evals"]))
    for r in results:
        print(f"{r['extractor']:>16} | {r['updates']:7d} | {r['audio_per_second']:9.1f} | " + " | ".join(
            f"{e['wer']:.3f} ({e['updates']})".rjust(11) for e in r["evals"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(args=vars(args), machine=platform.processor() or platform.machine(),
                                   torch=torch.__version__, results=results), indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
