#!/usr/bin/env bash
# Stage 1 of fsdd: connected-digit utterances made from the Free Spoken Digit Dataset (FSDD,
# Zohar Jackson et al., CC BY-SA 4.0): 2-6 recordings of one speaker joined with short pauses,
# 8 kHz -> 16 kHz, into data/{train,dev,test} and data/wavs/. Splits are by take: dev = held-out
# training takes, test = the official test takes 0-4 (only when the FSDD folder has them).
# Without --fsdd_dir the GitHub release is downloaded into downloads/ (no published checksum).
set -euo pipefail

fsdd_dir=        # FSDD folder holding recordings/ (or the recordings); empty = download into downloads/
num_train=2000   # training utterances
num_dev=200      # dev utterances (takes --dev_takes)
num_test=200     # test utterances (takes 0-4, when present)
dev_takes=45-49  # training takes held out for dev
seed=0           # the corpus depends only on the recordings, the options and the seed
help_message="Usage: $0 [options]"
. utils/parse_options.sh

python -m xtrans.bin.prepare_fsdd ${fsdd_dir:+--fsdd_dir "$fsdd_dir"} --download_dir downloads --out data \
  --num_train "$num_train" --num_dev "$num_dev" --num_test "$num_test" --dev_takes "$dev_takes" --seed "$seed"
