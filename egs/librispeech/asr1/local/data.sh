#!/usr/bin/env bash
# Stage 1 of LibriSpeech: download the parts (resumable, md5-checked) unless --librispeech_dir
# points at an extracted copy, then write Kaldi data dirs data/<part> and data/train.
set -euo pipefail

librispeech_dir=         # folder holding LibriSpeech/<part>; empty = download into downloads/
train_parts=train-clean-100   # comma-separated: train-clean-100 (100 h), +train-clean-360 (460 h), +train-other-500 (960 h)
eval_parts=dev-clean,dev-other,test-clean,test-other   # comma-separated
base_url=                # a mirror of www.openslr.org/resources/12 (empty = the default)
help_message="Usage: $0 [options]"
. utils/parse_options.sh

root=$librispeech_dir
if [ -z "$root" ]; then
  root=downloads
  python -m xtrans.bin.download --corpus librispeech --parts "$train_parts,$eval_parts" --dest "$root" \
    ${base_url:+--base_url "$base_url"}
fi
python -m xtrans.bin.prepare_librispeech --root "$root" --parts "$train_parts,$eval_parts" --out data
# data/train: the training parts together
python -m xtrans.bin.combine_data data/train $(echo "$train_parts" | tr ',' '\n' | sed 's/-/_/g; s#^#data/#')
