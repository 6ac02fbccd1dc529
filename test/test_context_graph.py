"""Hotwords: the Aho-Corasick context graph against a brute-force reference, the hotword line
format, spelling phrases with tokens.txt (sentencepiece BPE's merges), and the graph as the
scorer of modified beam search (boosts kept for complete phrases, taken back exactly for a
phrase left halfway; streams with different hotwords batched together)."""

from __future__ import annotations

import logging
import math
import random

import pytest
import torch

from xtrans.context import (ContextGraph, Hotword, PieceEncoder, ScorerSum, build_context_graph, parse_hotword,
                            parse_hotwords, read_hotwords)
from xtrans.context.pieces import is_bpe_table, spelling
from xtrans.models.config import EncoderConfig, ModelConfig, PredictorConfig, build_model
from xtrans.search import ModifiedBeamSearch, modified_beam_search
from xtrans.search_core import Scorer, split_search_states, stack_search_states

V = 6  # token ids 1..5 (0 = blank)


# ------------------------------------------------------------------------- brute-force reference
def node_boosts(phrases):
    """prefix -> its per-token boost: the largest boost of the phrases through it."""
    boost = {}
    for tokens, score in phrases:
        for k in range(1, len(tokens) + 1):
            boost[tuple(tokens[:k])] = max(boost.get(tuple(tokens[:k]), 0.0), score)
    return boost


def held(prefix, boost):
    """What a partial match of ``prefix`` holds: the boosts of its prefixes, summed."""
    return sum(boost[tuple(prefix[:k])] for k in range(1, len(prefix) + 1))


def reference(phrases, sequence):
    """Brute force: the longest suffix of ``sequence`` that is a proper prefix of a phrase (can still
    grow into one), the score of the sequence so far (every complete occurrence of a phrase keeps
    its held boost, plus what that partial match holds), and the kept part alone."""
    boost = node_boosts(phrases)
    proper = {tuple(t[:k]) for t, _ in phrases for k in range(1, len(t))}
    ends = {tuple(t) for t, _ in phrases}
    kept = 0.0
    for i in range(1, len(sequence) + 1):
        for phrase in ends:
            if len(phrase) <= i and tuple(sequence[i - len(phrase):i]) == phrase:
                kept += held(phrase, boost)
    suffix = ()
    for k in range(len(sequence), 0, -1):
        if tuple(sequence[-k:]) in proper:
            suffix = tuple(sequence[-k:])
            break
    return suffix, kept + (held(suffix, boost) if suffix else 0.0), kept


def path_of(graph, node):
    """The token path root -> node."""
    parent = {child: (n, v) for n in range(graph.num_nodes) for v, child in graph.children[n].items()}
    path = []
    while node != 0:
        node, v = parent[node]
        path.append(v)
    return tuple(reversed(path))


def random_phrases(rng, count, max_len, scores=(1.0, 1.5, 2.5)):
    return [([rng.randint(1, V - 1) for _ in range(rng.randint(1, max_len))], rng.choice(scores))
            for _ in range(count)]


@pytest.mark.parametrize("seed", range(12))
def test_automaton_matches_brute_force(seed):
    rng = random.Random(seed)
    phrases = random_phrases(rng, rng.randint(1, 6), 4)
    graph = ContextGraph(phrases, V)
    for _ in range(20):
        sequence = [rng.randint(1, V - 1) for _ in range(rng.randint(0, 14))]
        state, total = graph.start(), 0.0
        for i, v in enumerate(sequence):
            dense = graph.scores(state)
            state = graph.advance(state, v)
            total += dense[v]
            suffix, score, kept = reference(phrases, sequence[:i + 1])
            assert path_of(graph, state) == suffix
            assert total == pytest.approx(score, abs=1e-9)
        _, _, kept = reference(phrases, sequence)
        assert total + graph.final(state) == pytest.approx(kept, abs=1e-9)  # partial matches give back


def whole_word_total(phrases, sequence, word_starts, word_reward=None):
    """Brute force for whole-word matching: the sum, over every occurrence of a phrase that begins a
    word and is followed by a word start or the end of ``sequence``, of its held boost (the per-token
    boosts along its path, each the largest of the phrases sharing that prefix as whole words); with
    ``word_reward`` k, at most k x its per-token boost x its words (the largest over the phrases
    given with these tokens)."""
    def keyed(tokens):  # "B" before each word-start token
        return tuple(x for v in tokens for x in ((("B", v) if v in word_starts else (v,))))
    boost = {}
    for tokens, score in phrases:
        key = keyed(tokens) + ("B",)
        for k in range(1, len(key) + 1):
            w = 0.0 if key[k - 1] == "B" else score
            boost[key[:k]] = max(boost.get(key[:k], 0.0), w)
    total = 0.0
    for tokens in {tuple(t) for t, _ in phrases}:  # a phrase given twice counts once
        n = len(tokens)
        for i in range(len(sequence) - n + 1):
            if tuple(sequence[i:i + n]) == tuple(tokens) and (i + n == len(sequence) or sequence[i + n] in word_starts):
                key = keyed(tokens) + ("B",)
                reward = sum(boost[key[:k]] for k in range(1, len(key) + 1))
                if word_reward is not None:
                    words = sum(v in word_starts for v in tokens)
                    reward = min(reward, max(word_reward * score * words for t, score in phrases
                                             if tuple(t) == tuple(tokens)))
                total += reward
    return total


@pytest.mark.parametrize("seed", range(12))
def test_whole_word_automaton_matches_brute_force(seed):
    """With ``word_starts``, a phrase keeps its boost only where it is whole words: it begins a word
    and the next token begins another one (or the hypothesis ends); everything else gives back."""
    rng = random.Random(100 + seed)
    word_starts = {1, 2}
    phrases = []
    for _ in range(rng.randint(1, 5)):
        tokens = [rng.choice(sorted(word_starts))] + [rng.randint(1, V - 1) for _ in range(rng.randint(0, 3))]
        phrases.append((tokens, rng.choice((1.0, 1.5, 2.5))))
    graph = ContextGraph(phrases, V, word_starts=sorted(word_starts))
    for _ in range(30):
        sequence = [rng.randint(1, V - 1) for _ in range(rng.randint(0, 14))]
        state, total = graph.start(), 0.0
        for v in sequence:
            total += graph.scores(state)[v]
            state = graph.advance(state, v)
        assert total + graph.final(state) == pytest.approx(whole_word_total(phrases, sequence, word_starts), abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_word_reward_caps_what_a_complete_phrase_keeps(seed):
    """With ``word_reward`` k a complete phrase keeps at most k of its per-token boosts per word,
    while partial matches hold (and give back) the full per-token boosts: the brute force with the
    cap, on phrases of up to four words of up to three tokens (k = 1.5: the next test)."""
    rng = random.Random(200 + seed)
    word_starts = {1, 2}
    phrases = []
    for _ in range(rng.randint(1, 5)):
        tokens = []
        for w in range(rng.randint(1, 4)):  # the first word of two or three tokens: more tokens than words
            tokens += [rng.choice(sorted(word_starts))] + [rng.randint(3, V - 1) for _ in range(rng.randint(w == 0, 2))]
        phrases.append((tokens, rng.choice((1.0, 1.5, 2.5))))
    k = rng.choice((0.5, 1.0))
    graph = ContextGraph(phrases, V, word_starts=sorted(word_starts), word_reward=k)
    capped = 0
    for _ in range(30):
        sequence = [rng.randint(1, V - 1) for _ in range(rng.randint(0, 14))]
        if rng.random() < 0.5:  # often one of the phrases, inside other tokens
            tokens = rng.choice(phrases)[0]
            sequence = sequence[:3] + [1] * (rng.random() < 0.5) + tokens + [2] + sequence[3:6]
        state, total = graph.start(), 0.0
        for v in sequence:
            total += graph.scores(state)[v]
            state = graph.advance(state, v)
        expected = whole_word_total(phrases, sequence, word_starts, word_reward=k)
        assert total + graph.final(state) == pytest.approx(expected, abs=1e-9)
        capped += expected < whole_word_total(phrases, sequence, word_starts) - 1e-9
    assert capped > 0, "no sequence met the cap"


def test_word_reward_holds_per_token_and_keeps_per_word():
    graph = ContextGraph([([1, 2, 3], 1.0)], V, word_reward=1.5)  # no word starts: the phrase is one word
    state, steps = graph.start(), []
    for v in (1, 2, 3):
        steps.append(graph.scores(state)[v])
        state = graph.advance(state, v)
    assert steps == pytest.approx([1.0, 1.0, -0.5])  # held 2.0, then the complete phrase keeps 1.5
    assert graph.final(state) == 0.0
    same = ContextGraph([([1, 2, 3], 1.0)], V, word_reward=3.0)  # a cap above the sum changes nothing
    assert same.matched.tolist() == ContextGraph([([1, 2, 3], 1.0)], V).matched.tolist()
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="word_reward"):
            ContextGraph([([1], 1.0)], V, word_reward=bad)


def test_whole_words_take_back_a_phrase_inside_a_word():
    """"ON" (tokens 1 3 4, word start 1) inside "ONE" (1 3 4 5) gives its boost back; before a new
    word or at the end it keeps it; without word_starts it is kept inside "ONE" too."""
    phrase = [([1, 3, 4], 1.5)]
    whole, anywhere = ContextGraph(phrase, V, word_starts=[1, 2]), ContextGraph(phrase, V)

    def total(graph, sequence):
        state, score = graph.start(), 0.0
        for v in sequence:
            score += graph.scores(state)[v]
            state = graph.advance(state, v)
        return score + graph.final(state)

    assert total(whole, [1, 3, 4, 5]) == pytest.approx(0.0)
    assert total(anywhere, [1, 3, 4, 5]) == pytest.approx(4.5)
    assert total(whole, [1, 3, 4]) == total(whole, [1, 3, 4, 2, 5]) == pytest.approx(4.5)
    assert total(whole, [1, 3, 4, 1, 3, 4]) == pytest.approx(9.0)
    state = whole.advance(whole.advance(whole.start(), 1), 3)
    assert whole.scores(state)[4] == pytest.approx(1.5)  # the partial match is held (boosted) meanwhile
    with pytest.raises(ValueError, match="expected whole words, beginning with a word-start token"):
        ContextGraph([([3, 4], 1.0)], V, word_starts=[1])


def test_dense_scores_are_the_transitions():
    rng = random.Random(3)
    phrases = random_phrases(rng, 5, 3)
    graph = ContextGraph(phrases, V)
    for node in sorted(set(graph.live)):  # the states: nodes with children, and the root
        dense = graph.scores(node)
        for v in range(1, V):
            reached = graph.goto(node, v)
            target = graph.advance(node, v)
            assert target == graph.live[reached] and (graph.children[target] or target == 0)
            assert dense[v] == pytest.approx(graph.matched[reached] + graph.held[target] - graph.held[node], abs=1e-12)
        assert graph.scores(node) is not dense  # a fresh array each call: the caller may keep it


def test_partial_match_is_cancelled_and_overlaps_count():
    graph = ContextGraph([([1, 2, 3], 1.0), ([2, 3], 2.0)], V)
    state, total = graph.start(), 0.0
    for v in (1, 2, 4):  # leaves "1 2 3" after two tokens
        total += graph.scores(state)[v]
        state = graph.advance(state, v)
    assert total == 0.0 and state == graph.start()
    # "1 2 3" contains "2 3": both are kept ("1 2 3": 1+1+1, "2 3": 2+2), nothing is held after them
    state, total = graph.start(), 0.0
    for v in (1, 2, 3):
        total += graph.scores(state)[v]
        state = graph.advance(state, v)
    assert total == pytest.approx(3.0 + 4.0) and graph.final(state) == 0.0 and state == graph.start()


def test_graph_refuses_bad_phrases():
    with pytest.raises(ValueError, match="at least one token"):
        ContextGraph([([], 1.0)], V)
    with pytest.raises(ValueError, match=r"token ids in 1 \.\. 5"):
        ContextGraph([([0, 2], 1.0)], V)
    with pytest.raises(ValueError, match="finite positive boost"):
        ContextGraph([([2], -1.0)], V)


# ------------------------------------------------------------------------------ the line format
def test_hotword_lines():
    assert parse_hotword("TURN ON  THE RADIO") == Hotword("TURN ON THE RADIO", None)
    assert parse_hotword("  XLSR TRANSDUCER :2.5 ") == Hotword("XLSR TRANSDUCER", 2.5)
    assert parse_hotwords(["A", "", "  ", "B :1"]) == [Hotword("A"), Hotword("B", 1.0)]
    with pytest.raises(ValueError, match="expected a number after ':'"):
        parse_hotword("HELLO :loud")
    with pytest.raises(ValueError, match="score: expected a finite number > 0"):
        parse_hotword("HELLO :-1")
    with pytest.raises(ValueError, match="expected a phrase"):
        parse_hotword(":2.0")


def test_read_hotwords_file(tmp_path):
    path = tmp_path / "hotwords.txt"
    path.write_text("TURN ON THE RADIO\n\nXLSR :2.5\n", encoding="utf-8")
    assert read_hotwords(path) == ["TURN ON THE RADIO", "XLSR :2.5"]
    path.write_text("OK\nBAD :x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"hotwords.txt:2: hotword 'BAD :x': expected a number"):
        read_hotwords(path)
    with pytest.raises(FileNotFoundError, match="hotwords: .* does not exist"):
        read_hotwords(tmp_path / "missing.txt")


def test_build_context_graph_spells_and_refuses():
    spell = {"A B": [1, 2], "C": [3], "Q": [1, 5, 1]}
    graph = build_context_graph(["A B", "C :3"], lambda text: spell[text], V, hotwords_score=1.5)
    assert graph.num_phrases == 2
    assert graph.matched[graph.goto(graph.goto(0, 1), 2)] == 3.0  # "A B": 1.5 per token
    assert graph.matched[graph.goto(0, 3)] == 3.0  # "C :3"
    with pytest.raises(ValueError, match="'Q' has characters the model's tokenizer does not know"):
        build_context_graph(["Q"], lambda text: spell[text], V, unk_id=5)
    with pytest.raises(ValueError, match="encodes to no tokens"):
        build_context_graph(["A B"], lambda text: [], V)
    with pytest.raises(ValueError, match="hotwords_score: expected a finite number > 0"):
        build_context_graph(["A B"], lambda text: spell[text], V, hotwords_score=0)


# ------------------------------------------------------------------------- spelling by tokens.txt
PHRASES = ["TURN ON THE RADIO", "TURN OFF THE LIGHT", "PLAY SOME MUSIC", "KITCHEN", "LIVING ROOM", "RADIOS",
           "TURNON", "MUSICAL LIGHTS"]


@pytest.mark.parametrize("vocab_size", [24, 40, 60])
def test_piece_encoder_spells_as_sentencepiece_bpe(tmp_path, vocab_size):
    from xtrans.tokenizer import train_tokenizer

    rng = random.Random(0)
    words = " ".join(PHRASES).split()
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) for _ in range(300)]
    tokenizer = train_tokenizer(sentences, tmp_path / "bpe", vocab_size=vocab_size)
    pieces = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    encoder = PieceEncoder(pieces)
    assert is_bpe_table(pieces)
    for text in PHRASES + sentences[:50]:
        assert encoder.encode(text) == tokenizer.encode(text), text
    with pytest.raises(ValueError, match=r"characters \['q'\] are not in the model's tokens"):
        encoder.encode("TURN qON")


def test_a_unigram_table_is_recognised(tmp_path, caplog):
    from xtrans.tokenizer import train_tokenizer
    from xtrans.transcription import TokenTable

    rng = random.Random(0)
    words = " ".join(PHRASES).split()
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) for _ in range(300)]
    tokenizer = train_tokenizer(sentences, tmp_path / "uni", vocab_size=30, model_type="unigram")
    assert not is_bpe_table([tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)])
    tokenizer.write_tokens(tmp_path / "tokens.txt")
    encode, unk_id = spelling(TokenTable(tmp_path / "tokens.txt"))
    assert unk_id is None and "BPE" not in caplog.text  # warned when a phrase is spelled, not before
    with caplog.at_level(logging.WARNING):
        encode("KITCHEN")
    assert "not a sentencepiece BPE table" in caplog.text
    assert spelling(tokenizer) == (tokenizer.encode, tokenizer.unk_id)  # the model itself where there is one


# ------------------------------------------------------------------------ the graph in the search
def tiny_model(vocab_size=V, seed=0, kind="stateless"):
    torch.manual_seed(seed)
    cfg = ModelConfig(encoder=EncoderConfig(preset="tiny", pos_conv="chunk", waveform_norm="cumulative"),
                      predictor=PredictorConfig(kind=kind, embed_dim=32, hidden_dim=32, dropout=0.0),
                      joiner_dim=32)
    model = build_model(cfg, vocab_size=vocab_size).eval()
    with torch.no_grad():
        model.joiner.output.weight.mul_(4.0)
    return model


def frames(B=1, T=5, seed=1):
    return torch.randn(B, T, 96, generator=torch.Generator().manual_seed(seed))


def test_graph_is_a_scorer():
    assert isinstance(ContextGraph([([1], 1.0)], V), Scorer)


@pytest.mark.parametrize("kind", ["stateless", "lstm"])
def test_without_pruning_hotwords_shift_each_sequence_by_its_complete_phrases(kind):
    """Every token sequence of a short utterance survives a beam of 1000 (V=4, T=5: 364), so each
    sequence's score with hotwords is its score without them plus the boosts of the phrases it
    completes — exactly 0 for a sequence that leaves a phrase halfway."""
    model = tiny_model(vocab_size=4, kind=kind)
    enc = frames()
    phrases = [([1, 2, 3], 1.5), ([2, 2], 0.7), ([3], 0.4)]
    graph = ContextGraph(phrases, 4)
    plain = {tuple(h.tokens): h.score for h in modified_beam_search(model, enc, beam=1000)[0]}
    steered = modified_beam_search(model, enc, beam=1000, scorer=graph)[0]
    assert len(steered) == len(plain) == 364
    halfway = 0
    for h in steered:
        _, _, kept = reference(phrases, h.tokens)
        assert h.score == pytest.approx(plain[tuple(h.tokens)] + kept, abs=1e-9)
        if kept == 0 and any(tuple(h.tokens[i:i + 2]) == (1, 2) for i in range(len(h.tokens))):
            halfway += 1
            assert h.score == pytest.approx(plain[tuple(h.tokens)], abs=1e-12)
    assert halfway > 0  # sequences that leave "1 2 3" after "1 2" were there


def test_a_boosted_phrase_wins_a_near_tie():
    """Logits that do not depend on the audio: token 1 a little above token 2 on every frame."""
    model = tiny_model(vocab_size=4)
    with torch.no_grad():
        model.joiner.output.weight.zero_()
        model.joiner.output.bias.copy_(torch.tensor([4.0, 1.1, 1.0, -10.0]))
    enc = frames(T=20)
    (best, *_), = modified_beam_search(model, enc, beam=4)
    assert best.tokens == [1]
    (weak, *_), = modified_beam_search(model, enc, beam=4, scorer=ContextGraph([([2], 0.05)], 4))
    assert weak.tokens == [1]  # a boost below the gap of 0.1 changes nothing
    (boosted, *_), = modified_beam_search(model, enc, beam=4, scorer=ContextGraph([([2], 1.5)], 4))
    assert 2 in boosted.tokens and 1 not in boosted.tokens


@pytest.mark.parametrize("beam", [1, 2, 4])
def test_the_search_without_boosts_runs_inside_the_search_with_them(beam):
    """Token 1 a little above token 2 on every frame, token 3 never said; the phrase "2 3" is boosted
    3.0 per token. Extending by 2 gains the boost, so a beam ranked by score alone fills with "2"
    hypotheses, whose boost is taken back when 3 never comes. The search without the boosts runs
    inside: its hypotheses and scores (``plain``) are exactly those of the search without hotwords,
    so the result is that search's result."""
    model = tiny_model(vocab_size=4)
    with torch.no_grad():
        model.joiner.output.weight.zero_()
        model.joiner.output.bias.copy_(torch.tensor([4.0, 1.1, 1.0, -10.0]))
    enc = frames(T=20)
    graph = ContextGraph([([2, 3], 3.0)], 4)
    search = ModifiedBeamSearch(model, beam=beam)
    alone = search.step(enc, search.init_state(1))
    inside = search.step(enc, search.init_state(1, scorer=graph))
    assert len(inside.tokens) <= 2 * beam
    assert 2 in inside.tokens[int(inside.scores.argmax())], "by score alone, a '2' leads before the take-back"
    plain = {tokens: score for tokens, score in zip(inside.tokens, inside.plain.tolist()) if score > -math.inf}
    assert plain == pytest.approx(dict(zip(alone.tokens, alone.scores.tolist())), abs=1e-9)
    (best, *_), = search.results(inside)
    assert best.tokens == search.results(alone)[0][0].tokens


def test_streams_with_different_scorers_batch_like_alone():
    model = tiny_model(vocab_size=V, kind="lstm")
    search = ModifiedBeamSearch(model, beam=3)
    scorers = [ContextGraph([([1, 2], 2.0)], V), None,
               ScorerSum([ContextGraph([([3], 1.0)], V), ContextGraph([([4, 4], 0.5)], V)])]
    chunks = torch.randn(3, 3, 4, 96, generator=torch.Generator().manual_seed(5))  # stream, chunk, frames, D
    alone = []
    for b in range(3):
        state = search.init_state(1, scorer=scorers[b])
        for c in range(3):
            state = search.step(chunks[b, c][None], state)
        alone.append(search.results(state)[0])
    states = [search.init_state(1, scorer=s) for s in scorers]
    for c in range(3):
        batch = stack_search_states(states)
        states = split_search_states(search.step(chunks[:, c], batch))
    for b in range(3):
        got = search.results(states[b])[0]
        assert [h.tokens for h in got] == [h.tokens for h in alone[b]]
        assert [h.score for h in got] == pytest.approx([h.score for h in alone[b]], abs=1e-4)  # float32 joiner
    assert search.init_state(3, scorer=scorers).scorers == scorers


def test_init_state_refuses_bad_scorers():
    search = ModifiedBeamSearch(tiny_model())
    with pytest.raises(ValueError, match=r"one scorer per stream \(2\), found 1"):
        search.init_state(2, scorer=[None])
    with pytest.raises(TypeError, match="expected a Scorer"):
        search.init_state(1, scorer=object())


def test_merged_hypotheses_keep_the_best_state():
    """Alignments of one token sequence merge; their scorer states are the same (a function of the
    tokens), and the merged score is the log-sum of theirs, each shifted by the same boost."""
    model = tiny_model(vocab_size=4)
    with torch.no_grad():
        model.joiner.output.bias[0] += 3.0  # blank as likely as a token: alignments meet
    enc = frames(T=6, seed=4)
    graph = ContextGraph([([1, 2], 1.0), ([2], 0.5)], 4)
    merged = modified_beam_search(model, enc, beam=12, scorer=graph)[0]
    unmerged = modified_beam_search(model, enc, beam=12, merge=False, scorer=graph)[0]
    assert len({tuple(h.tokens) for h in unmerged}) < len(unmerged), "nothing merged"
    state = ModifiedBeamSearch(model, beam=12).step(enc, ModifiedBeamSearch(model, beam=12).init_state(1, scorer=graph))
    for tokens, context in zip(state.tokens, state.scorer_states):
        expected = graph.start()
        for v in tokens:
            expected = graph.advance(expected, v)
        assert context == expected
    assert merged[0].score >= max(h.score for h in unmerged if h.tokens == merged[0].tokens) - 1e-12
    assert math.isfinite(merged[0].score)
