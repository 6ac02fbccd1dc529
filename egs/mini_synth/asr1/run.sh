#!/usr/bin/env bash
# The embedded demo: synthetic speech (eSpeak NG voices), no download and no pretrained weights.
# A small streamable encoder is trained from scratch through all five stages on a CPU.
#   ./run.sh                       all 12 stages
#   ./run.sh --stage 6 --stop_stage 10 --ngpu 1
#   ./run.sh --debug true          a few utterances and updates per stage, to test the setup
# Options: ./run.sh --help (they are those of asr.sh).
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

./asr.sh \
  --local_data_opts "--num_train 3000 --num_dev 150 --num_test 150" \
  --bpe_size 48 \
  --text_normalizer upper \
  --test_sets test \
  "$@"
