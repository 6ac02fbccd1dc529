#!/usr/bin/env bash
# Real human speech on a CPU: connected digit strings made from the Free Spoken Digit Dataset
# (6 speakers, 8 kHz -> 16 kHz; CC BY-SA 4.0, see local/data.sh). A small streamable encoder
# (preset "mini") is trained from scratch through all five stages, as in egs/mini_synth: stage 4
# fits its CNN to log-mel features (conf/pretrain_frontend.yaml), then the CNN stays frozen.
#   ./run.sh                       all 12 stages
#   ./run.sh --debug true          a few utterances and updates per stage, to test the setup
#   ./run.sh --local_data_opts "--fsdd_dir /data/fsdd --num_train 4000"   (replaces the defaults below)
# Data: ../../../../shared/data/fsdd when it exists (training takes 5-49 only: there is no test set,
# so dev is decoded), else the FSDD release is downloaded (with the official test takes 0-4).
# Once data/ is prepared, test is decoded when data/test exists, else dev. With another source in
# --local_data_opts, add --test_sets dev when that folder lacks the test takes 0-4.
# Options: ./run.sh --help (they are those of asr.sh).
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

shared_fsdd=../../../../shared/data/fsdd
data_opts="--num_train 2000 --num_dev 200 --num_test 200"
test_sets=test
if [ -d "$shared_fsdd/recordings" ]; then
  data_opts="--fsdd_dir $shared_fsdd $data_opts"
  if ! compgen -G "$shared_fsdd/recordings/[0-9]_*_[0-4].wav" > /dev/null; then test_sets=dev; fi
fi
if [ -f data/train/wav.scp ]; then  # already prepared: decode the test set if there is one
  if [ -f data/test/wav.scp ]; then test_sets=test; else test_sets=dev; fi
fi

./asr.sh \
  --local_data_opts "$data_opts" \
  --bpe_size 32 \
  --frontend_config conf/pretrain_frontend.yaml \
  --text_normalizer upper \
  --test_sets "$test_sets" \
  --train_threads 1 \
  --train_nproc 2 \
  "$@"
