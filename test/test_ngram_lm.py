"""Token-level n-gram LMs: interpolated Witten-Bell training, the ARPA format (round trip, every
conditional distribution sums to 1), the LM as a scorer of modified beam search (its scores equal
the ARPA back-off probabilities, scale 0 equals no LM), and python -m xtrans.bin.train_lm."""

from __future__ import annotations

import math
import random

import pytest
import torch

from xtrans.context import ArpaError, ContextGraph, LMScorer, NgramLM, ScorerSum, read_arpa, train_ngram, write_arpa
from xtrans.context.arpa import BOS, EOS, UNK
from xtrans.models.config import EncoderConfig, ModelConfig, PredictorConfig, build_model
from xtrans.search import modified_beam_search
from xtrans.search_core import Scorer

PIECES = ["<blk>", UNK, "\u2581A", "\u2581B", "C", "D", "E"]  # a model's tokens.txt, id 0 = blank
WORDS = PIECES[1:]


def corpus(seed=0, n=60):
    rng = random.Random(seed)
    return [[rng.choice(WORDS[1:5]) for _ in range(rng.randint(1, 6))] for _ in range(n)]


def contexts(lm: NgramLM):
    """Every listed history that can be followed (all listed n-grams of order < N but ``</s>``), and ()."""
    return [()] + [g for g in lm.probs if len(g) < lm.order and g[-1] != EOS]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_arpa_round_trip_and_distributions_sum_to_one(tmp_path, order):
    lm = train_ngram(corpus(), order, WORDS)
    write_arpa(lm, tmp_path / "lm.arpa")
    back = read_arpa(tmp_path / "lm.arpa")
    assert back.order == order and back.counts() == lm.counts()
    assert set(back.probs) == set(lm.probs) and set(back.backoffs) == set(lm.backoffs)
    for g, p in lm.probs.items():
        assert back.probs[g] == pytest.approx(p, abs=1e-8)
    for h in contexts(back):
        total = sum(10 ** back.log10_prob(w, h) for w in WORDS + [EOS])
        assert total == pytest.approx(1.0, abs=1e-6), h
    # an unseen history backs off to a distribution that sums to 1 as well
    assert sum(10 ** back.log10_prob(w, ("E", "E", "E")) for w in WORDS + [EOS]) == pytest.approx(1.0, abs=1e-6)


def test_witten_bell_by_hand():
    """Two sentences "A B" and "A": counts by hand for the bigram model."""
    lm = train_ngram([["A", "B"], ["A"]], 2, ["A", "B"])
    # unigrams: c(A)=2, c(B)=1, c(</s>)=2; N=5, T=3, M=3 (A, B, </s>)
    assert 10 ** lm.probs[("A",)] == pytest.approx((2 + 3 / 3) / (5 + 3))
    assert 10 ** lm.probs[("B",)] == pytest.approx((1 + 1) / 8)
    assert lm.probs[(BOS,)] == -99
    # after A: c(A B)=1, c(A </s>)=1: c=2, T=2
    p_b = (1 + 2 * (2 / 8)) / (2 + 2)
    assert 10 ** lm.probs[("A", "B")] == pytest.approx(p_b)
    assert 10 ** lm.backoffs[("A",)] == pytest.approx(2 / 4)
    # after <s>: only A (c=2, T=1); B unseen -> bow * P(B)
    assert 10 ** lm.log10_prob("B", [BOS]) == pytest.approx(1 / 3 * 2 / 8)


def test_training_refuses_bad_input():
    with pytest.raises(ValueError, match="order: expected >= 1"):
        train_ngram(corpus(), 0, WORDS)
    with pytest.raises(ValueError, match="no <unk> to count them as"):
        train_ngram([["A", "Z"]], 2, ["A"])
    with pytest.raises(ValueError, match="expected words other than <s> and </s>"):
        train_ngram([["A"]], 2, ["A", EOS])


@pytest.mark.parametrize("text, match", [
    ("ngram 1=1\n", "no \\\\data\\\\ section"),
    ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1 A\n\\end\\\n", "declares ngram 1=2, found 1"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1 A\n", "no \\\\end\\\\"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\nhigh A\n\\end\\\n", r"lm.arpa:5: expected a number, found 'high'"),
    ("\\data\\\nngram 1=1\nngram 2=1\n\n\\1-grams:\n-1 A\n\\2-grams:\n-1 A B\n\\end\\\n",
     "words that are not unigrams"),
])
def test_read_arpa_errors(tmp_path, text, match):
    path = tmp_path / "lm.arpa"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ArpaError, match=match):
        read_arpa(path)


# ------------------------------------------------------------------------------ the LM as scorer
@pytest.mark.parametrize("order", [1, 2, 3])
def test_scorer_scores_are_the_backoff_probabilities(order):
    lm = train_ngram(corpus(1), order, WORDS)
    scorer = LMScorer(lm, PIECES, scale=0.5)
    assert isinstance(scorer, Scorer)
    rng = random.Random(2)
    for _ in range(20):
        history, state = [BOS], scorer.start()
        for _ in range(rng.randint(0, 8)):
            scores = scorer.scores(state)
            assert scores[0] == 0.0
            for v in range(1, len(PIECES)):
                assert scores[v] == pytest.approx(0.5 * math.log(10) * lm.log10_prob(PIECES[v], history), abs=1e-12)
            v = rng.randint(1, len(PIECES) - 1)
            history.append(PIECES[v])
            state = scorer.advance(state, v)
            assert len(state) <= order - 1
        assert scorer.final(state) == pytest.approx(0.5 * math.log(10) * lm.log10_prob(EOS, history), abs=1e-12)


def test_pieces_missing_from_the_lm_score_as_unk():
    lm = train_ngram(corpus(), 2, WORDS[:-1])  # no "E"
    scorer = LMScorer(lm, PIECES, scale=1.0)
    state = scorer.advance(scorer.start(), PIECES.index("E"))
    assert scorer.scores(scorer.start())[PIECES.index("E")] == pytest.approx(math.log(10) * lm.log10_prob(UNK, [BOS]))
    assert scorer.scores(state)[2] == pytest.approx(math.log(10) * lm.log10_prob("\u2581A", [BOS, UNK]))


def test_scorer_refuses_another_vocabulary():
    lm = train_ngram([["HELLO", "WORLD"]], 2, ["HELLO", "WORLD", UNK])
    with pytest.raises(ValueError, match="lists 1 of the model's 6 tokens; expected a token-level LM"):
        LMScorer(lm, PIECES)
    with pytest.raises(ValueError, match="lm_scale: expected a finite number >= 0"):
        LMScorer(train_ngram(corpus(), 2, WORDS), PIECES, scale=-1)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(encoder=EncoderConfig(preset="tiny", pos_conv="chunk", waveform_norm="cumulative"),
                      predictor=PredictorConfig(kind="lstm", embed_dim=32, hidden_dim=32, dropout=0.0), joiner_dim=32)
    model = build_model(cfg, vocab_size=len(PIECES)).eval()
    with torch.no_grad():
        model.joiner.output.weight.mul_(4.0)
    return model


def test_scale_zero_equals_no_lm():
    model = tiny_model()
    enc = torch.randn(3, 20, 96, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([20, 13, 4])
    plain = modified_beam_search(model, enc, lengths, beam=4)
    silent = LMScorer(train_ngram(corpus(), 3, WORDS), PIECES, 0.0)
    fused = modified_beam_search(model, enc, lengths, beam=4, scorer=silent)
    for p, f in zip(plain, fused):
        assert [(h.tokens, h.timestamps, h.score) for h in p] == [(h.tokens, h.timestamps, h.score) for h in f]


def test_fusion_adds_the_scaled_lm_log_probability():
    """Without pruning (V=7, T=3: every sequence kept), each sequence's fused score is its score
    plus lambda * ln P_LM(y </s>)."""
    model = tiny_model(1)
    enc = torch.randn(1, 3, 96, generator=torch.Generator().manual_seed(3))
    lm = train_ngram(corpus(), 2, WORDS)
    plain = {tuple(h.tokens): h.score for h in modified_beam_search(model, enc, beam=10 ** 4)[0]}
    fused = modified_beam_search(model, enc, beam=10 ** 4, scorer=LMScorer(lm, PIECES, 0.7))[0]
    assert len(fused) == len(plain) == 1 + 6 + 36 + 216
    for h in fused:
        words = [BOS] + [PIECES[v] for v in h.tokens] + [EOS]
        lm_logp = sum(lm.log10_prob(w, words[:i]) for i, w in enumerate(words) if i) * math.log(10)
        assert h.score == pytest.approx(plain[tuple(h.tokens)] + 0.7 * lm_logp, abs=1e-9)


def test_lm_and_hotwords_add_up():
    lm = LMScorer(train_ngram(corpus(), 2, WORDS), PIECES, 0.3)
    graph = ContextGraph([([2, 3], 1.0)], len(PIECES))
    both = ScorerSum([lm, graph])
    state = both.start()
    for v in (2, 3, 4):
        assert both.scores(state) == pytest.approx(lm.scores(state[0]) + graph.scores(state[1]))
        state = both.advance(state, v)
    assert both.final(state) == pytest.approx(lm.final(state[0]) + graph.final(state[1]))
    with pytest.raises(ValueError, match="one vocabulary size"):
        ScorerSum([lm, ContextGraph([([1], 1.0)], 3)])


# ------------------------------------------------------------------------------ the command line
def test_train_lm_command(tmp_path, capsys):
    from xtrans.bin.train_lm import main
    from xtrans.tokenizer import train_tokenizer

    rng = random.Random(0)
    words = "TURN ON OFF THE RADIO LIGHT KITCHEN".split()
    lines = [f"utt{i} " + " ".join(rng.choice(words) for _ in range(rng.randint(2, 6))) for i in range(200)]
    (tmp_path / "text").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = train_tokenizer([l.split(maxsplit=1)[1] for l in lines], tmp_path / "bpe", vocab_size=24)
    out = tmp_path / "lm" / "lm.arpa"
    assert main(["--text", str(tmp_path / "text"), "--tokenizer", str(tmp_path / "bpe.model"), "--order", "3",
                 "--out", str(out)]) == 0
    assert "order 3 from 200 sentences" in capsys.readouterr().out
    lm = read_arpa(out)
    pieces = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    assert lm.order == 3 and set(lm.vocabulary) == set(pieces[1:]) | {BOS, EOS}
    first = [pieces[i] for i in tokenizer.encode(lines[0].split(maxsplit=1)[1])]
    assert (first[0],) in lm.probs and (BOS, first[0]) in lm.probs
    LMScorer(out, pieces)  # fits the model's tokens
    assert main(["--text", str(tmp_path / "missing"), "--tokenizer", str(tmp_path / "bpe.model"),
                 "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--text", str(tmp_path / "text"), "--tokenizer", str(tmp_path / "bpe.model"), "--order", "0",
                 "--out", str(out)]) == 2
    assert "--order: expected >= 1" in capsys.readouterr().err
