"""Sentencepiece tokenizer with blank = 0, tokens.txt, normalisers, train_bpe CLI."""

import pytest

from xtrans.bin import train_bpe
from xtrans.tokenizer import (
    NORMALIZERS,
    Tokenizer,
    get_normalizer,
    register_normalizer,
    train_tokenizer,
)

WORDS = "zero one two three four five six seven eight nine oh".split()
TEXTS = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 5)).upper()
         for i in range(300)]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("lang") / "bpe"
    return train_tokenizer(TEXTS, prefix, vocab_size=40, normalizer="upper")


def test_blank_is_zero_unk_is_one_and_vocab_size_counts_blank(bpe):
    assert bpe.blank_id == 0 and bpe.unk_id == 1
    assert bpe.vocab_size == 40
    tokens = bpe.tokens()
    assert tokens[:2] == ["<blk>", "<unk>"] and len(tokens) == 40 and len(set(tokens)) == 40


def test_round_trip_and_ids_never_blank(bpe):
    for text in TEXTS[:50]:
        ids = bpe.encode(text)
        assert ids and min(ids) >= 1 and max(ids) < bpe.vocab_size
        assert bpe.decode(ids) == text
        assert bpe.decode([0] + ids + [0, 0]) == text  # blanks are skipped


def test_normaliser_applied_and_saved_with_model(bpe):
    assert bpe.encode("three  Four") == bpe.encode("THREE FOUR")
    loaded = Tokenizer(bpe.model_path)
    assert loaded.normalizer_name == "upper"
    assert loaded.encode("nine oh") == bpe.encode("NINE OH")


def test_unknown_characters_map_to_unk(bpe):
    assert 1 in bpe.encode("ZERO Q")


def test_tokens_txt(bpe, tmp_path):
    bpe.write_tokens(tmp_path / "tokens.txt")
    lines = (tmp_path / "tokens.txt").read_text().splitlines()
    assert lines[0] == "<blk> 0" and lines[1] == "<unk> 1" and len(lines) == 40
    assert all(line.rsplit(" ", 1)[1] == str(i) for i, line in enumerate(lines))


def test_unigram(tmp_path):
    tok = train_tokenizer(TEXTS, tmp_path / "uni", vocab_size=25, model_type="unigram")
    assert tok.vocab_size == 25 and tok.decode(tok.encode(TEXTS[3])) == TEXTS[3]


def test_normalizers():
    assert get_normalizer("lower_no_punct")("Hello, World! It's 'ok'.") == "hello world it's ok"
    assert NORMALIZERS["upper"]("a  b\tc") == "A B C"

    @register_normalizer("test_reverse")
    def reverse(text):
        return text[::-1]

    assert get_normalizer("test_reverse")("ab") == "ba"
    with pytest.raises(ValueError, match="normalizer name 'test_reverse' is already registered"):
        register_normalizer("test_reverse")(reverse)
    with pytest.raises(ValueError, match=r"normalizer must be one of \[.*'upper'.*\], got 'loud'"):
        get_normalizer("loud")


def test_training_errors(tmp_path, bpe):
    with pytest.raises(ValueError, match="model_type must be 'bpe', 'unigram'"):
        train_tokenizer(TEXTS, tmp_path / "x", vocab_size=30, model_type="wordpiece")
    with pytest.raises(ValueError, match="vocab_size must be >= 3"):
        train_tokenizer(TEXTS, tmp_path / "x", vocab_size=2)
    with pytest.raises(ValueError, match="texts holds no non-empty transcript"):
        train_tokenizer(["", "  "], tmp_path / "x", vocab_size=30)
    with pytest.raises(ValueError, match="lower vocab_size or give more text"):
        train_tokenizer(TEXTS, tmp_path / "x", vocab_size=5000)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 40\), found 40"):
        bpe.decode([40])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer(tmp_path / "missing.model")


def test_train_bpe_cli(tmp_path, capsys):
    text = tmp_path / "text"
    text.write_text("".join(f"utt{i:03d} {t}\n" for i, t in enumerate(TEXTS)))
    assert train_bpe.main([str(text), str(tmp_path / "lang"), "--vocab-size", "35",
                           "--normalizer", "lower"]) == 0
    assert "V=35 (blank=0)" in capsys.readouterr().out
    tok = Tokenizer(tmp_path / "lang" / "bpe.model")
    assert tok.normalizer_name == "lower" and tok.decode(tok.encode("ONE TWO")) == "one two"
    assert (tmp_path / "lang" / "tokens.txt").read_text().startswith("<blk> 0\n<unk> 1\n")


def test_id_to_token_range(bpe):
    assert bpe.id_to_token(0) == "<blk>"
    with pytest.raises(ValueError, match=r"i: expected a token id in \[0, 40\), found 40"):
        bpe.id_to_token(40)
    with pytest.raises(ValueError, match=r"i: expected a token id in \[0, 40\), found -1"):
        bpe.id_to_token(-1)
