#!/usr/bin/env bash
# The shared XLSR-Transducer recipe (ESPnet's asr.sh convention): every egs/<corpus>/asr1/run.sh
# sets its corpus options and calls this script; stage 1 runs the corpus's local/data.sh.
#
#   1 data preparation (local/data.sh)       7 training stage 2 (chunks; variants 2a-2d)
#   2 audio formatting (16 kHz ark/scp)      8 training stage 3 (left context; 3a-3c)
#   3 BPE (sentencepiece, blank = 0;         9 training stage 4 (multi-chunk)
#     a token n-gram LM with --lm_order)
#   4 pretrained encoder import (or a random 10 training stage 5 (attention sinks; 5a-5b)
#     one, its CNN fitted to log-mel)
#   5 data statistics and checks            11 decoding (simulated and chunk-by-chunk streaming)
#   6 training stage 1 (full attention)     12 scoring: WER, RTF, latency, level robustness,
#                                              robustness (noise, babble, rooms, telephone),
#                                              decode-time context (hotwords, LM; with
#                                              --context_phrases), RESULTS.md, plots
#
# All work is done by `python -m xtrans.bin.*`; hyperparameters live in conf/*.yaml.
set -euo pipefail

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

stage=1                 # first stage to run
stop_stage=12           # last stage to run
ngpu=0                  # GPUs for training (0 = CPU); honours CUDA_VISIBLE_DEVICES
nj=2                    # parallel jobs for audio formatting and decoding
debug=false             # a small subset of the data and a few updates per stage, to test a setup
debug_utts=60           # utterances per set in --debug mode
debug_updates=4         # updates per training stage in --debug mode
resume=                 # checkpoint for the selected training stage: one of its own continues exactly (--resume), another stage's becomes its starting model (--init)
train_set=train         # data/<train_set> (written by local/data.sh)
dev_set=dev             # data/<dev_set>
test_sets=test          # data/<set> decoded in stage 11 (space separated)
local_data_opts=        # options passed to local/data.sh
bpe_size=64             # vocabulary size including blank
bpe_type=bpe            # bpe or unigram
text_normalizer=upper   # text normalisation before BPE (see xtrans.tokenizer)
pretrained=             # encoder to import: HF directory, fairseq/unilm .pt or hub name (wav2vec2, XLS-R, MMS, HuBERT, WavLM, data2vec-audio); empty = random init
conf_variant=           # conf/variants/<name>.yaml: dotted-key overrides of every stage's conf (e.g. another encoder family); empty = none
frontend_config=        # with a random encoder: fit its CNN to log-mel features first (e.g. conf/pretrain_frontend.yaml)
train_stages="1 2a 2b 2c 2d 3a 3b 3c 4 5a 5b"   # training stages/variants to run
decode_model=best.pt    # checkpoint decoded in stage 11 (best.pt or average.pt)
decode_config=conf/decode.yaml   # searches, modes and chunk sizes of stage 11
decode_opts=            # extra options of xtrans.bin.decode, e.g. --piece_ms 100 (mode, search, beam, chunk, left, sinks: the plan's)
level_gains=-30,-20,-10,0,6   # input gains (dB) of the level-robustness table in stage 12
level_opts="--search beam --beam 4"   # its search (as RESULTS.md's headline rows); other options of xtrans.bin.level_robustness
robustness_conditions=clean,noise,babble,reverb,telephone   # conditions of the robustness table in stage 12 (gain: the level table)
robustness_snrs=20,10,5,0       # its noise and babble SNRs (dB)
robustness_babble_snrs=         # its babble SNRs (dB) when they differ from robustness_snrs
robustness_rt60s=0.3,0.6,0.9    # its reverberation times (s)
robustness_opts="--search beam --beam 4"   # its search (as the level table); other options of xtrans.bin.robustness, e.g. --noise_scp data/noise.scp (default: generated held-out noise), --rir_scp FILE (measured rooms; add rir to robustness_conditions)
lm_order=0              # > 0: stage 3 also trains a token n-gram LM of this order on the training text (data/lang_bpe/lm.arpa)
context_phrases=        # phrase inventory (one per line, e.g. the corpus's commands): stage 12 measures hotword lists and LM fusion on the test utterances that say one
context_models=5a       # the trained stages measured by the context table
context_opts=           # other options of xtrans.bin.context_table, e.g. --snr 10 --lm_scales 0.1,0.2,0.3 --hotwords_score 1.5 --draws 3
train_opts=             # extra options of xtrans.bin.train, e.g. "--no_progress"
train_threads=          # torch CPU threads of each training process (stages 6-10; stage 4's CNN fit, one process, takes
                        # train_threads x train_nproc); empty = OMP_NUM_THREADS as set
train_nproc=1           # CPU training processes per stage (gloo DDP, xtrans.bin.train --nproc; with --ngpu 0): each takes its
                        # own data.max_seconds batch, so an update is train_nproc batches; on a small CPU model 2 processes of 1
                        # thread go faster than 1 of 2 (egs/mini_synth/asr1/run.sh notes)
noise_scp=              # noise list for training (e.g. MUSAN: "<id> <wav>" lines): a noise entry in every stage (data.noise_scp)
rir_scp=                # room impulse responses for training (e.g. RIRS_NOISES): a reverb entry in every stage (data.rir_scp)
help_message="Usage: $0 [options]   (stages: see the top of egs/TEMPLATE/asr1/asr.sh)"

. utils/parse_options.sh

if [ $# -ne 0 ]; then
  log "unexpected arguments: $*"; exit 1
fi
if [ -n "$conf_variant" ] && [ ! -f "conf/variants/${conf_variant}.yaml" ]; then
  log "--conf_variant: conf/variants/${conf_variant}.yaml does not exist (here: $(ls conf/variants 2>/dev/null | sed 's/\.yaml$//' | tr '\n' ' '))"
  exit 1
fi

# Stage <-> training stage: exp/stage<N>/<variant>/, started from the named earlier stage.
declare -A INIT_OF=( [1]=pretrained [2]=1 [3]=2b [4]=3b [5]=3a )

exp_dir_of() {  # variant (1, 2a, ...) -> its experiment directory
  local v=$1 n=${1:0:1}
  if [ "$v" = "$n" ]; then echo "exp/stage${n}"; else echo "exp/stage${n}/${v}"; fi
}

variants_of() {  # training stage number -> its selected variants
  local n=$1 v out=""
  for v in $train_stages; do [ "${v:0:1}" = "$n" ] && out="$out $v"; done
  echo $out
}

# Each stage's wall time: logged at its end and kept in exp/stage_times.tsv (stage, seconds, what; a
# rerun replaces the stage's line), which stage 12 puts into RESULTS.md.
. utils/stage_times.sh

dump=dump
sets=$(printf "%s\n" $train_set $dev_set $test_sets | awk '!seen[$0]++' | tr "\n" " ")  # each set once
if "$debug"; then
  log "debug mode: $debug_utts utterances per set, $debug_updates updates per training stage"
  dump=dump_debug
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  stage_t0=$SECONDS
  log "stage 1: data preparation (local/data.sh $local_data_opts)"
  local/data.sh $local_data_opts
  stage_took 1 "data preparation"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  stage_t0=$SECONDS
  log "stage 2: audio formatting: 16 kHz mono, kaldiio ark/scp under $dump/"
  for x in $sets; do
    src=data/$x
    if "$debug"; then
      python -m xtrans.bin.subset_data --n "$debug_utts" data/$x data/${x}_debug
      src=data/${x}_debug
    fi
    python -m xtrans.bin.prepare_audio --nj "$nj" "$src" "$dump/$x"
  done
  stage_took 2 "audio formatting"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  stage_t0=$SECONDS
  log "stage 3: BPE (sentencepiece $bpe_type, $bpe_size tokens including blank)"
  python -m xtrans.bin.train_bpe --vocab-size "$bpe_size" --model-type "$bpe_type" \
    --normalizer "$text_normalizer" "$dump/$train_set/text" data/lang_bpe
  if [ "$lm_order" -gt 0 ]; then
    log "stage 3: token ${lm_order}-gram LM of the training text (data/lang_bpe/lm.arpa)"
    python -m xtrans.bin.train_lm --text "$dump/$train_set/text" --tokenizer data/lang_bpe/bpe.model \
      --order "$lm_order" --out data/lang_bpe/lm.arpa
  fi
  stage_took 3 "BPE"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  stage_t0=$SECONDS
  # the architecture is conf/train_stage1.yaml's model.encoder section
  if [ -n "$pretrained" ]; then
    log "stage 4: importing the pretrained encoder $pretrained"
  else
    log "stage 4: no pretrained encoder given: the encoder of conf/train_stage1.yaml, randomly initialised"
  fi
  python -m xtrans.bin.import_encoder --config conf/train_stage1.yaml ${pretrained:+--pretrained "$pretrained"} \
    ${conf_variant:+--variant "conf/variants/${conf_variant}.yaml"} --out exp/pretrained/encoder.pt
  if [ -z "$pretrained" ] && [ -n "$frontend_config" ]; then
    log "stage 4: fitting the random encoder's CNN to log-mel features ($frontend_config; curve: exp/pretrained/frontend_pretrain.png)"
    opts=
    if "$debug"; then opts="--set max_updates=$debug_updates stats_batches=2"; fi
    python -m xtrans.bin.pretrain_frontend --config "$frontend_config" --encoder exp/pretrained/encoder.pt \
      --train_dir "$dump/$train_set" --dev_dir "$dump/$dev_set" ${train_threads:+--num_threads "$((train_threads * train_nproc))"} $opts
  fi
  stage_took 4 "encoder import${frontend_config:+ and CNN fit}"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  stage_t0=$SECONDS
  log "stage 5: data statistics and checks; bad training/dev utterances are dropped into $dump/<set>_clean"
  for x in $train_set $dev_set; do
    python -m xtrans.bin.validate_data --bpe-model data/lang_bpe/bpe.model --clean-dir "$dump/${x}_clean" "$dump/$x"
  done
  for x in $test_sets; do  # test sets are decoded whole: problems are reported, not dropped
    python -m xtrans.bin.validate_data --bpe-model data/lang_bpe/bpe.model "$dump/$x" || true
  done
  stage_took 5 "data checks"
fi

nproc_opt=
if [ "$ngpu" = 0 ] && [ "$train_nproc" -gt 1 ]; then nproc_opt="--nproc $train_nproc"; fi
for n in 1 2 3 4 5; do
  s=$((n + 5))
  if [ "$stage" -le "$s" ] && [ "$stop_stage" -ge "$s" ]; then
    stage_t0=$SECONDS
    variants=$(variants_of "$n")
    [ -n "$variants" ] || { log "stage $s: training stage $n not selected (--train_stages)"; continue; }
    mkdir -p "exp/stage${n}"
    for v in $variants; do
      init_of=${INIT_OF[$n]}
      if [ "$init_of" = pretrained ]; then init=exp/pretrained/encoder.pt; else init=$(exp_dir_of "$init_of")/best.pt; fi
      outdir=$(exp_dir_of "$v")
      opts="--set data.train_dir=$dump/${train_set}_clean data.dev_dir=$dump/${dev_set}_clean data.tokenizer=data/lang_bpe/bpe.model"
      opts="$opts${noise_scp:+ data.noise_scp=$noise_scp}${rir_scp:+ data.rir_scp=$rir_scp}"
      if "$debug"; then
        opts="$opts training.max_updates=$debug_updates checkpoint.save_interval_updates=$debug_updates"
      fi
      resume_opt=
      if [ -n "$resume" ]; then
        case "$resume" in
          "$outdir"/*) resume_opt="--resume $resume" ;;      # this variant's own checkpoint: continue exactly
          "exp/stage${n}"/*) log "stage $s: skipping $v (--resume names another variant)"; continue ;;
          *) init=$resume ;;                               # another stage's model: start from it
        esac
      fi
      if [ ! -e "$init" ]; then
        log "stage $s: training stage $v starts from $init, which does not exist: run stage 4 / stage ${init_of} first (--train_stages)"
        exit 1
      fi
      log "stage $s: training stage $v from $init -> $outdir (follow: tail -f exp/stage${n}/train.log)"
      ${train_threads:+env OMP_NUM_THREADS=$train_threads} python -m xtrans.bin.train --config "conf/train_stage${v}.yaml" --init "$init" --outdir "$outdir" \
        ${conf_variant:+--variant "conf/variants/${conf_variant}.yaml"} \
        --stage_log "exp/stage${n}/train.log" --ngpu "$ngpu" $nproc_opt $resume_opt $train_opts $opts
    done
    stage_took "$s" "training stage $n:$(printf " %s" $variants)"
  fi
done

if [ "$stage" -le 11 ] && [ "$stop_stage" -ge 11 ]; then
  stage_t0=$SECONDS
  log "stage 11: decoding ($test_sets) with $decode_model of every trained model"
  for v in $train_stages; do
    dir=$(exp_dir_of "$v")
    [ -f "$dir/$decode_model" ] || { log "skip $v: no $dir/$decode_model"; continue; }
    for x in $test_sets; do
      # one process per model and test set: every configuration that xtrans.recipes.decode_plan gives
      # for the stage's mask and $decode_config -> $dir/decode_${x}_<tag>, scored
      log "decoding $x with $v (the plan of conf/train_stage${v}.yaml and $decode_config)"
      python -m xtrans.bin.decode --model "$dir/$decode_model" --data "$dump/$x" --outdir "$dir" \
        --train_config "conf/train_stage${v}.yaml" --decode_config "$decode_config" \
        --tokenizer data/lang_bpe/bpe.model --nj "$nj" $decode_opts < /dev/null
    done
  done
  stage_took 11 "decoding"
fi

if [ "$stage" -le 12 ] && [ "$stop_stage" -ge 12 ]; then
  stage_t0=$SECONDS
  # level robustness: WER at input gains of the full-attention (1) and attention-sink (5a) models,
  # each under its training mask, on the first test set (with --debug its small subset)
  # -> exp/level_robustness.json, exp/plots/level_robustness.png and a section of RESULTS.md;
  # robustness: the same models and data under noise (generated noise of families training never
  # draws, or --robustness_opts "--noise_scp FILE"), babble of other test utterances, simulated rooms
  # and a telephone line -> exp/robustness.json, exp/plots/robustness.png and a section of RESULTS.md
  level_models=
  for v in 1 5a; do
    dir=$(exp_dir_of "$v")
    if [ -f "$dir/$decode_model" ]; then
      level_models="$level_models --model stage$v=$dir/$decode_model"
    else
      log "stage 12: level robustness: skip $v (no $dir/$decode_model)"
    fi
  done
  if [ -n "$level_models" ]; then
    test_set=${test_sets%% *}
    log "stage 12: level robustness on $test_set at $level_gains dB:$level_models"
    python -m xtrans.bin.level_robustness $level_models --data "$dump/$test_set" --gains "$level_gains" \
      --tokenizer data/lang_bpe/bpe.model --nj "$nj" --out exp/level_robustness.json \
      --plot exp/plots/level_robustness.png $level_opts < /dev/null
    log "stage 12: robustness on $test_set ($robustness_conditions; SNRs $robustness_snrs dB, RT60s $robustness_rt60s s):$level_models"
    python -m xtrans.bin.robustness $level_models --data "$dump/$test_set" --conditions "$robustness_conditions" \
      --snrs "$robustness_snrs" --babble_snrs "${robustness_babble_snrs:-$robustness_snrs}" --rt60s "$robustness_rt60s" \
      --tokenizer data/lang_bpe/bpe.model --nj "$nj" --out exp/robustness.json \
      --plot exp/plots/robustness.png $robustness_opts < /dev/null
  fi
  context_model_opts=
  for v in $context_models; do
    dir=$(exp_dir_of "$v")
    [ -f "$dir/$decode_model" ] && context_model_opts="$context_model_opts --model stage$v=$dir/$decode_model"
  done
  if [ -n "$context_phrases" ] && [ -n "$context_model_opts" ]; then
    # hotwords and LM fusion (beam search): the test utterances that say one of $context_phrases, in
    # held-out noise, with no context / a list holding their phrase / distractors / the LM, and the
    # whole set noisy and clean -> exp/context.json, exp/plots/context.png, a section of RESULTS.md
    test_set=${test_sets%% *}
    lm_opts=
    [ -f data/lang_bpe/lm.arpa ] && lm_opts="--lm data/lang_bpe/lm.arpa --tune_data $dump/$dev_set"
    log "stage 12: decode-time context on $test_set ($context_phrases${lm_opts:+, data/lang_bpe/lm.arpa}):$context_model_opts"
    python -m xtrans.bin.context_table $context_model_opts --data "$dump/$test_set" --phrases "$context_phrases" \
      --tokenizer data/lang_bpe/bpe.model --nj "$nj" $lm_opts --out exp/context.json \
      --plot exp/plots/context.png $context_opts < /dev/null
  fi
  stage_took 12 "level, robustness${context_phrases:+ and context} tables"
  log "stage 12: scoring: RESULTS.md and plots"
  python -m xtrans.bin.score --results exp --out RESULTS.md --plots_dir exp/plots
  cat RESULTS.md
fi

log "done (stages $stage-$stop_stage)"
