"""Bad data end to end (recipe stages 2, 5 and 6): a messy corpus is formatted, checked, cleaned
and trained on without a crash, and the report names every bad utterance with its reason."""

from xtrans.config import from_dict
from xtrans.data.kaldi_dir import read_data_dir
from xtrans.data.prepare import prepare_audio
from xtrans.data.validate import validate_data_dir, write_clean_data_dir
from xtrans.testing.data_fixtures import make_messy_data_dir
from xtrans.tokenizer import Tokenizer, train_tokenizer
from xtrans.testing.train_fixtures import tiny_train_config
from xtrans.train.config import TrainConfig
from xtrans.train.trainer import Trainer


def test_messy_corpus_trains_and_report_names_each_bad_utterance(tmp_path):
    raw = make_messy_data_dir(tmp_path, num_good=12)
    # the raw directory: every problem is reported by id and reason
    raw_report = validate_data_dir(raw, sample_rate=16000)
    codes = {}
    for p in raw_report.problems:
        codes.setdefault(p.utt_id, set()).add(p.code)
    assert {"empty_audio", "unreadable"} & codes["empty"]
    assert "unreadable" in codes["trunc"] and "truncated" in " ".join(
        p.reason for p in raw_report.problems if p.utt_id == "trunc")
    assert "nan_audio" in codes["nan"]
    assert {"wrong_rate", "not_mono"} <= codes["stereo8k"]
    assert "too_long" in codes["short"]
    assert "missing_audio" in codes["ghost"]
    assert "missing_text" in codes["notext"]
    assert "silent" in codes["zeros"] and "missing_audio" in codes["good3"]
    assert not any(u.startswith("more") for u in codes)

    # stage 2: format to 16 kHz mono; unreadable audio is dropped with a reason, 8 kHz stereo is fixed
    dump = tmp_path / "dump" / "train"
    result = prepare_audio(raw, dump)
    dropped = {p.utt_id: p.reason for p in result.dropped}
    assert {"empty", "trunc", "nan"} <= set(dropped)
    assert "stereo8k" in read_data_dir(dump).utt_ids

    # stage 3 + 5: tokenizer, then check with it and keep only good utterances
    texts = [line.split(maxsplit=1)[1] for line in (dump / "text").read_text().splitlines() if " " in line]
    train_tokenizer(texts * 5, tmp_path / "lang" / "bpe", vocab_size=30, model_type="bpe", normalizer="upper")
    tok = Tokenizer(tmp_path / "lang" / "bpe.model")
    report = validate_data_dir(dump, tokenizer=tok)
    bad = set(report.bad_utt_ids)
    assert {"short", "notext"} <= bad and "zeros" in bad | set(dropped)  # silent: dropped at stage 2 or 5
    clean = tmp_path / "dump" / "train_clean"
    write_clean_data_dir(report, clean)
    kept = set(read_data_dir(clean).utt_ids)
    assert kept and not (kept & bad) and "stereo8k" in kept

    # stage 6: a few updates on what is left, no crash, finite loss
    cfg = from_dict(TrainConfig, tiny_train_config(
        data={"train_dir": str(clean), "dev_dir": None, "tokenizer": str(tmp_path / "lang" / "bpe.model")},
        training={"max_updates": 3}))
    state = Trainer(cfg, tmp_path / "exp").fit()
    assert state.step == 3 and state.skipped_batches == 0
