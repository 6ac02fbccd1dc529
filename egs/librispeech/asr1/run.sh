#!/usr/bin/env bash
# LibriSpeech with the XLSR-53 encoder (GPU sizes: bf16, duration batching, DDP over --ngpu).
#   ./run.sh --stage 1 --stop_stage 3                          data and BPE
#   ./run.sh --stage 4 --stop_stage 4 --pretrained /path/xlsr_53_56k.pt   (or an HF directory / hub name)
#   ./run.sh --stage 6 --stop_stage 10 --ngpu 4                training stages 1-5
#   ./run.sh --local_data_opts "--librispeech_dir /data/LibriSpeech_root"   use a local copy
# Other encoders: --pretrained takes wav2vec 2.0 / XLS-R / MMS, HuBERT, WavLM and data2vec-audio (HF
# directories or hub names, fairseq or unilm .pt); a variant changes only what differs in every stage's
# conf (the preset, the batch), conf/variants/<name>.yaml:
#   ./run.sh --pretrained microsoft/wavlm-large --conf_variant wavlm_large   WavLM large (English)
#   ./run.sh --pretrained facebook/mms-1b --conf_variant mms_1b              MMS 1B (1,400 languages)
# Noise and rooms (as ESPnet's asr.sh): every training stage mixes MUSAN-style noise and convolves with
# RIRS_NOISES-style impulse responses ("<id> <wav entry>" lists), each with probability 0.5:
#   ./run.sh --stage 6 --noise_scp data/musan_noise.scp --rir_scp data/rirs.scp
# and fine-tunes with wav2vec 2.0's feature masking (model.encoder.mask_* in conf/train_stage*.yaml).
# Options: ./run.sh --help.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

./asr.sh \
  --local_data_opts "--train_parts train-clean-100" \
  --train_set train \
  --dev_set dev_clean \
  --test_sets "test_clean test_other dev_other" \
  --bpe_size 500 \
  --bpe_type unigram \
  --text_normalizer upper \
  --pretrained facebook/wav2vec2-large-xlsr-53 \
  --nj 8 \
  "$@"
