#!/usr/bin/env bash
# The paper's story at small scale, on a CPU: self-supervised pretraining on unlabelled audio, then
# fine-tuning with few or many labels, then the streaming stages. Synthetic speech (eSpeak NG voices, the
# corpus of egs/mini_synth/asr1), no download and no published weights.
#   ./run.sh                   all 8 stages (RESULTS.md at the end)
#   ./run.sh --stage 4         from the fine-tuning on
#   ./run.sh --debug true      a few utterances and updates per run, to test the setup
#
#   1 data, audio formatting, BPE (asr.sh stages 1-3)
#   2 a random encoder whose CNN is fitted to log-mel filters (xtrans.bin.pretrain_frontend, as the demo's
#     stage 4): exp/frontend/encoder.pt; then HuBERT-style pretraining of its transformer, the CNN frozen, on
#     the training audio, no labels (xtrans.bin.pretrain_ssl): exp/ssl/encoder.pt, exp/ssl/hf/ (a Hugging
#     Face directory), exp/ssl/loss.png
#   3 the encoders fine-tuning starts from: exp/ssl/hf imported through conf/train_stage1.yaml as the
#     LibriSpeech recipe imports XLSR-53 (asr.sh stage 4 --pretrained; then its data checks, stage 5), and
#     the random baseline, exp/frontend/encoder.pt itself (pretraining's starting point: the same CNN, the
#     transformer as initialised); the label subset (--label_percent of the training utterances)
#   4 training stage 1 (full attention, conf/train_stage1.yaml) from each encoder on each label set, the
#     same updates each: exp/stage1/{pretrained,random}_{<label_percent>,100}pct (two runs side by side)
#   5 training stage 2b (chunk 640 ms) from the pretrained 100% model: exp/stage2/2b
#   6 the controlled stage comparison, all four from that one 2b model with the same number of updates:
#     3a (left 640 ms), 3b (left 1280 ms), 5a (left 640 ms + 4 sinks), 5b (left 640 ms + 16 sinks)
#   7 decoding of the test set (--nj side by side): the stage-1 models with full attention, the streaming
#     ones chunk by chunk (real streaming, with each chunk's compute time)
#   8 RESULTS.md: the pretrained-vs-random table, the stage table, learning curves (xtrans.bin.ssl_table)
#
# Every run decodes its last checkpoint (the same number of updates for all), greedy search.
#
# Recipe notes (measured alone on the 2-core CPU, 2026-12-07):
#   - The encoder is the demo's shape (3 layers, D=192, letters as tokens) with XLSR-53's per-frame
#     layer-norm CNN: a Hugging Face config.json can describe it, so fine-tuning imports exp/ssl/hf the way
#     the LibriSpeech recipe imports XLSR-53. The demo's batch_norm CNN cannot be written there
#     (xtrans.ssl.export.NotExportableError) and would have to travel as exp/ssl/encoder.pt.
#   - Sizing: a first run with 600 pretraining updates, 600 stage-1 updates per run, 150 (2b) and 100 (3a-5b)
#     took 14.7 min; every stage-1 model was on the all-blank plateau (test WER 93-100%, mostly deletions).
#     The update counts alone were then scaled to fill the 30-minute budget: 800 / 1200 / 200 / 150; the whole
#     run took 21.6 min (pretraining 6.6, the four stage-1 runs 11.5, 2b 0.8, 3a-5b 1.7, decoding 0.5).
#     Still near the plateau: test WER 90-95% in every row, and pretraining reached 10.7% masked accuracy
#     over 100 clusters. Then stage 1 took the demo's from-scratch CTC weight 1.0 and no dropout (feature
#     masking and layer drop kept, as the issue's fine-tuning settings): 20.3 min in all (pretraining 5.6,
#     stage 1 10.8), and still 93-96% WER in every row (10%: pretrained 94.12 / random 93.28; 100%: 94.12 /
#     96.43; dev loss 12.19 / 12.51; streaming 3a/3b/5a/5b 94.1/93.9/93.3/96.0). At this size nothing left
#     the plateau in the budget.
#   - The CNN: fine-tuning freezes it, and both encoders started from a random CNN (pretraining trained
#     its own), which the demo had shown to be the handicap (its frozen log-mel-fitted CNN left the plateau
#     where a random one did not). Stage 2 now fits the CNN of a random encoder to log-mel filters first
#     (conf/pretrain_frontend.yaml, the demo's fit, 2.5 min) and pretraining trains the transformer on it,
#     the CNN frozen; the random baseline is that same starting point, so the two encoders share their CNN
#     and differ only in what pretraining learnt. Feature masking at 2/5 of LibriSpeech's strength (0.2 x 10
#     frames, 10% of the channels). With the same 800 pretraining updates (2.3 min now that the CNN is
#     frozen: 16.5% masked accuracy) every model learnt: test WER 10% of the labels pretrained 53.78 /
#     random 48.53 (dev loss 8.15 / 7.35), 100% 36.55 / 36.55 (4.53 / 4.27); from one 2b model (35.08),
#     3a / 3b / 5a / 5b 37.39 / 37.39 / 37.82 / 36.34; 17.8 min for stages 2-7. Pretraining did not help:
#     its 800 updates were then tripled to use the budget (ssl_opts below; chosen before seeing the
#     result): 20.1% masked accuracy, and still no gain: 10% of the labels pretrained 52.52 / random 48.53
#     (dev loss 8.24 / 7.35), 100% 36.76 / 36.55 (4.48 / 4.27); from one 2b model (36.13) 3a / 3b / 5a / 5b
#     36.97 / 35.92 / 37.39 / 37.82 (single runs: differences of a point are 5 words of 476). Stages 2-7
#     took 23.7 min (pretraining 7.5 of them), about 24 min with the data.
#   - Why pretraining does not pay here, as far as measured: the targets are k-means clusters of log-mel
#     frames and the frozen CNN already maps the audio to log-mel, so masked prediction teaches the
#     transformer to fill in spectra from their neighbours, not the phonetic units that HuBERT's second
#     iteration (clusters of the model's own layer, --iteration 2) and hundreds of thousands of updates
#     give; pretraining's own loss kept falling (800 -> 2400 updates: 16.5% -> 20.1% masked accuracy) while
#     fine-tuning did not move. Next, not measured: a second iteration on layer features, and pretraining
#     on more unlabelled audio than the labelled set (here the same 2500 utterances).
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
# One torch thread per process: the paired runs of stages 4 and 6 take a core each, decoding runs --nj
# processes. The runs alone (pretraining, 2b) take --train_threads.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

stage=1                 # first stage to run
stop_stage=8            # last stage to run
nj=2                    # parallel jobs for formatting, and decodings side by side (one thread each)
train_threads=2         # torch threads of a run that trains alone (pretraining, stage 2b)
debug=false             # a small subset of the data and a few updates per run
debug_utts=60           # utterances per set in --debug mode
debug_updates=4         # updates per run in --debug mode
local_data_opts="--num_train 2500 --num_dev 100 --num_test 150"   # options of local/data.sh (the corpus)
bpe_size=30             # letters and a few pairs (the demo's units)
label_percent=10        # the small label set: this percentage of the training utterances
# pretraining settings (xtrans.ssl.config.PretrainConfig; HuBERT's masks 0.8 x 10 frames and projection by default)
ssl_opts="--num_clusters 100 --kmeans_max_frames 30000 --kmeans_max_iter 50 --max_updates 2400 --max_seconds 20 \
--lr 2.0e-3 --warmup_updates 80"
decode_opts="--search greedy"   # options of xtrans.bin.decode for every model
train_opts=             # extra options of xtrans.bin.train, e.g. --no_progress
help_message="Usage: $0 [options]   (stages: see the top of this file)"

. utils/parse_options.sh

if [ $# -ne 0 ]; then
  log "unexpected arguments: $*"; exit 1
fi

dump=dump
ssl_debug= ; frontend_debug= ; train_debug=
if "$debug"; then
  dump=dump_debug
  log "debug mode: $debug_utts utterances per set, $debug_updates updates per run"
  ssl_debug="--max_updates $debug_updates --num_clusters 8 --save_interval_updates $debug_updates"
  frontend_debug="--set max_updates=$debug_updates stats_batches=2"
  train_debug="training.max_updates=$debug_updates checkpoint.save_interval_updates=$debug_updates \
checkpoint.valid_interval_updates=$debug_updates training.freeze_encoder_updates=1"
fi
asr() {  # the shared stages of egs/TEMPLATE/asr1/asr.sh with this corpus's options
  ./asr.sh --local_data_opts "$local_data_opts" --bpe_size "$bpe_size" --test_sets test --nj "$nj" \
    --debug "$debug" --debug_utts "$debug_utts" --debug_updates "$debug_updates" "$@"
}

# Each stage's wall time: logged and kept in exp/run_times.tsv (stage, seconds, what) for RESULTS.md.
stage_times_file=exp/run_times.tsv
. utils/stage_times.sh

train() {  # conf variant, --init, outdir, threads, [progress: yes|no], [--set overrides...]
  local v=$1 init=$2 outdir=$3 threads=$4 progress=$5; shift 5
  local opts="data.train_dir=$dump/train_clean data.dev_dir=$dump/dev_clean data.tokenizer=data/lang_bpe/bpe.model"
  [ -e "$init" ] || { log "training $outdir starts from $init, which does not exist: run the earlier stages"; return 1; }
  log "training stage $v from $init -> $outdir ($threads thread(s); follow: tail -f $outdir/train.log)"
  env OMP_NUM_THREADS="$threads" python -m xtrans.bin.train --config "conf/train_stage${v}.yaml" --init "$init" \
    --outdir "$outdir" $([ "$progress" = yes ] || echo --no_progress) $train_opts --set $opts $train_debug "$@"
}

last_checkpoint() {  # run directory -> its newest checkpoint
  echo "$1/$(cat "$1/latest.txt")"
}

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  stage_t0=$SECONDS
  log "stage 1: data, audio formatting, BPE (asr.sh stages 1-3)"
  asr --stage 1 --stop_stage 3
  stage_took 1 "data, formatting, BPE"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  stage_t0=$SECONDS
  rm -rf exp/frontend exp/ssl
  log "stage 2: a random encoder of conf/train_stage1.yaml, its CNN fitted to log-mel -> exp/frontend/encoder.pt"
  python -m xtrans.bin.import_encoder --config conf/train_stage1.yaml --seed 0 --out exp/frontend/encoder.pt
  python -m xtrans.bin.pretrain_frontend --config conf/pretrain_frontend.yaml --encoder exp/frontend/encoder.pt \
    --train_dir "$dump/train" --dev_dir "$dump/dev" --num_threads "$train_threads" $frontend_debug
  log "stage 2: self-supervised pretraining of its transformer on the audio of $dump/train (no labels) -> exp/ssl"
  python -m xtrans.bin.pretrain_ssl --data "$dump/train" --dev "$dump/dev" --outdir exp/ssl \
    --config conf/train_stage1.yaml --variant conf/pretrain_encoder.yaml --init exp/frontend/encoder.pt \
    --num_threads "$train_threads" $ssl_opts $ssl_debug
  [ -f exp/ssl/hf/config.json ] || { log "stage 2: pretraining wrote no Hugging Face directory (see above)"; exit 1; }
  stage_took 2 "CNN fit and SSL pretraining"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  stage_t0=$SECONDS
  log "stage 3: the pretrained encoder imported from exp/ssl/hf (asr.sh stage 4), data checks (stage 5)"
  asr --stage 4 --stop_stage 5 --pretrained exp/ssl/hf
  log "stage 3: the random baseline: pretraining's starting point exp/frontend/encoder.pt -> exp/random/encoder.pt"
  mkdir -p exp/random
  cp exp/frontend/encoder.pt exp/random/encoder.pt
  n=$(wc -l < "$dump/train_clean/wav.scp")
  k=$(( n * label_percent / 100 )); [ "$k" -ge 1 ] || k=1
  log "stage 3: $label_percent% of the labels: $k of $n training utterances -> $dump/train_clean_${label_percent}pct"
  python -m xtrans.bin.subset_data --n "$k" "$dump/train_clean" "$dump/train_clean_${label_percent}pct"
  stage_took 3 "encoder import, random encoder, label subset"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  stage_t0=$SECONDS
  for pct in "$label_percent" 100; do
    train_dir=$dump/train_clean; [ "$pct" = 100 ] || train_dir=$dump/train_clean_${pct}pct
    log "stage 4: stage 1 on $pct% of the labels ($train_dir), from the pretrained and from the random encoder"
    rm -rf "exp/stage1/pretrained_${pct}pct" "exp/stage1/random_${pct}pct"
    train 1 exp/pretrained/encoder.pt "exp/stage1/pretrained_${pct}pct" 1 no data.train_dir="$train_dir" &
    other=$!
    train 1 exp/random/encoder.pt "exp/stage1/random_${pct}pct" 1 yes data.train_dir="$train_dir" \
      || { kill "$other" 2>/dev/null; exit 1; }
    wait "$other"
  done
  stage_took 4 "stage 1: pretrained and random encoder, $label_percent% and 100% of the labels"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  stage_t0=$SECONDS
  log "stage 5: stage 2b (chunk 640 ms) from the pretrained 100% model"
  rm -rf exp/stage2/2b
  train 2b "$(last_checkpoint exp/stage1/pretrained_100pct)" exp/stage2/2b "$train_threads" yes
  stage_took 5 "stage 2b"
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  stage_t0=$SECONDS
  init=$(last_checkpoint exp/stage2/2b)
  for pair in "3a 3b" "5a 5b"; do
    set -- $pair
    log "stage 6: stages $1 and $2 from $init, side by side"
    rm -rf "exp/stage${1:0:1}/$1" "exp/stage${2:0:1}/$2"
    train "$1" "$init" "exp/stage${1:0:1}/$1" 1 no &
    other=$!
    train "$2" "$init" "exp/stage${2:0:1}/$2" 1 yes || { kill "$other" 2>/dev/null; exit 1; }
    wait "$other"
  done
  set --
  stage_took 6 "stages 3a, 3b, 5a, 5b from one 2b model"
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  stage_t0=$SECONDS
  decode() {  # run directory, options of the streaming rule: its last checkpoint on the test set, one thread
    local dir=$1; shift
    log "stage 7: decoding $dump/test with $(last_checkpoint "$dir") $* -> $dir/decode_test"
    rm -rf "$dir/decode_test"
    python -m xtrans.bin.decode --model "$(last_checkpoint "$dir")" --data "$dump/test" --outdir "$dir/decode_test" \
      --tokenizer data/lang_bpe/bpe.model --nj 1 --num_threads 1 "$@" $decode_opts < /dev/null
  }
  # --nj decodings side by side (stage 8 scores them)
  jobs_list=()
  for pct in "$label_percent" 100; do
    for init in pretrained random; do
      jobs_list+=("exp/stage1/${init}_${pct}pct --mode simulated")   # full attention
    done
  done
  jobs_list+=("exp/stage2/2b --mode streaming --chunk_ms 640"
              "exp/stage3/3a --mode streaming --chunk_ms 640 --left_ms 640"
              "exp/stage3/3b --mode streaming --chunk_ms 640 --left_ms 1280"
              "exp/stage5/5a --mode streaming --chunk_ms 640 --left_ms 640 --sinks 4"
              "exp/stage5/5b --mode streaming --chunk_ms 640 --left_ms 640 --sinks 16")
  running=0
  for job in "${jobs_list[@]}"; do
    if [ "$running" -ge "$nj" ]; then wait -n; running=$((running - 1)); fi
    decode $job &
    running=$((running + 1))
  done
  while [ "$running" -gt 0 ]; do wait -n; running=$((running - 1)); done
  stage_took 7 "decoding"
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "stage 8: RESULTS.md and plots"
  python -m xtrans.bin.ssl_table --pretrain_dir exp/ssl --decode_name decode_test --label_percent "$label_percent" \
    --finetune "pretrained ${label_percent}%" "exp/stage1/pretrained_${label_percent}pct" \
    --finetune "random ${label_percent}%" "exp/stage1/random_${label_percent}pct" \
    --finetune "pretrained 100%" exp/stage1/pretrained_100pct \
    --finetune "random 100%" exp/stage1/random_100pct \
    --streaming 2b exp/stage2/2b --streaming 3a exp/stage3/3a --streaming 3b exp/stage3/3b \
    --streaming 5a exp/stage5/5a --streaming 5b exp/stage5/5b \
    --times exp/run_times.tsv --plots_dir exp/plots --out RESULTS.md
  cat RESULTS.md
fi

log "done (stages $stage-$stop_stage) in $SECONDS s"
