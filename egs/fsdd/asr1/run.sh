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
#
# Training runs in 2 processes of 1 thread (--train_nproc 2), each with 15 s of a 30 s update, as in
# egs/mini_synth. Measured from a fresh clone, alone on the 2-core CPU, on the shared training takes:
# one process of 2 threads (30 s batches) took 2035 s for run.sh (stage 1 826 s, stages 2-5 434 s),
# dev WER beam 4 stage 1 4.94%, stage 5a 4.68% (10 dB held-out noise 27.3%); two processes 1774 s
# (stage 1 669 s, stages 2-5 394 s), 4.81% / 4.05% (24.2%).
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
