#!/usr/bin/env bash
# Stage 1 of mini_synth: synthesise data/{train,dev,test} (held-out voices for dev and test).
set -euo pipefail

num_train=3000   # training utterances
num_dev=150      # dev utterances (held-out voices)
num_test=150     # test utterances (other held-out voices)
seed=0           # the corpus depends only on the options and the seed
min_snr=20       # dB; additive white/coloured noise at an SNR drawn from [min_snr, max_snr]
max_snr=40       # dB (5-40 dB left a from-scratch CPU model far slower: see the notes in run.sh)
nj=2             # synthesis processes
help_message="Usage: $0 [options]"
. utils/parse_options.sh

python -m xtrans.bin.synth_corpus --outdir data --num_train "$num_train" --num_dev "$num_dev" \
  --num_test "$num_test" --seed "$seed" --nj "$nj" --min_snr "$min_snr" --max_snr "$max_snr"
