#!/usr/bin/env bash
# The GPU check: what CPU tests cannot show, in one run of at most 8 minutes on one NVIDIA H200
# (a 470 s budget over the steps below; a step that would start past it is skipped and fails).
#
#   tools/gpu_check.sh [--out DIR] [--dry-run] [--corpus synth|tones] [--only STEP,...]
#   make gpu-check
#
# Installs nothing: it runs the python named by $PYTHON, else the repository's .venv/bin/python,
# else python3, which must import xtrans and (without --dry-run) a CUDA build of torch.
# Every step writes JSON under --out (default gpu_check_out/), its output to <out>/logs/<step>.log:
#
#   env.json                   python, torch, CUDA, GPU
#   cuda_tests.json            the tests that skip on CPU (test/ files with a CUDA skipif, -k cuda)
#   train.json                 mini_synth recipe: data (stages 1-3, 5), random encoder (stage 4
#                              without the CNN fit), training stage 1 for 200 updates in bf16 on
#                              the GPU; fails unless the mean loss of the last fifth of the
#                              updates is below 0.9 x that of the first fifth (exp/stage1/steps.jsonl)
#   rnnt_loss_transducer.json  bench/rnnt_loss.py --mode transducer: full vs pruned loss
#   encoder.json               bench/encoder.py: XLSR-53-size encoder step on a 400 s batch (25 x 16 s),
#                              ours (full attention, chunk mask) vs Hugging Face
#   train_step.json            bench/train_step.py: one XLSR-53 transducer update, 2 x 15 s,
#                              full vs pruned, dense vs linear attention, and the head alone at
#                              the LibriSpeech conf's 400 s batches
#   train_step_400s.json       the same update on a 400 s batch (25 x 16 s) where it fits
#   summary.json               every step: status, seconds, its JSON file
#
# --dry-run runs every step on the CPU at tiny sizes (about a minute), so that the script cannot
# rot unnoticed (test/test_gpu_check.py). --corpus tones trains on xtrans.testing's tone corpus
# instead of eSpeak NG speech (the default when espeakng-loader is not installed). --only runs the
# named steps (env, cuda_tests, train, rnnt_loss, encoder, train_step, train_step_400s), e.g. to rerun one.
# The exit status is 1 when any step failed; the other steps still run.
set -euo pipefail

out=gpu_check_out
dry_run=false
corpus=
only=
usage="Usage: $0 [--out DIR] [--dry-run] [--corpus synth|tones] [--only STEP,...]"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    --dry-run|--dry_run) dry_run=true; shift ;;
    --corpus) corpus=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1; $usage" >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then PYTHON=$repo/.venv/bin/python; else PYTHON=python3; fi
fi
found=$(command -v "$PYTHON") || { echo "gpu_check.sh: PYTHON=$PYTHON is not a command" >&2; exit 2; }
PYTHON=$found
case "$PYTHON" in /*) ;; *) PYTHON=$PWD/$PYTHON ;; esac
# the recipe scripts call `python`: a wrapper (not a symlink, which would lose a venv) on PATH
mkdir -p "$out/bin"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$PYTHON" > "$out/bin/python"
chmod +x "$out/bin/python"
export PATH="$out/bin:$PATH" PYTHONUNBUFFERED=1
unset VIRTUAL_ENV

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (gpu_check) $*"; }

# budget: the whole run in seconds (each step also has its own limit)
if "$dry_run"; then
  device=cpu; ngpu=0; dtype=fp32; budget=400
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
  device=cuda; ngpu=1; dtype=bf16; budget=470
fi
: > "$out/steps.tsv"
failed=0

# step NAME TIMEOUT_S JSON COMMAND...: runs COMMAND in the repository root, logs, records the status
step() {
  local name=$1 limit=$2 json=$3 start rc left
  shift 3
  if [ -n "$only" ] && [[ ",$only," != *",$name,"* ]]; then return 0; fi
  left=$(( budget - ($(date +%s) - start_all) ))
  [ "$left" -ge "$limit" ] || limit=$left
  if [ "$limit" -lt 10 ]; then
    failed=1
    log "step $name SKIPPED: the ${budget} s budget is spent"
    printf '%s\t%s\t%s\t%s\n' "$name" 124 0 "$json" >> "$out/steps.tsv"
    return 0
  fi
  log "step $name (limit ${limit} s): $*"
  start=$(date +%s)
  set +e
  (cd "$repo" && timeout "$limit" bash -e -u -o pipefail -c '"$@"' "$name" "$@") > "$out/logs/$name.log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    failed=1
    log "step $name FAILED (exit $rc); last lines of $out/logs/$name.log:"
    tail -n 15 "$out/logs/$name.log"
  fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$json" >> "$out/steps.tsv"
  return 0
}

# ---------------------------------------------------------------- environment
env_check() {
  python - "$device" "$out/env.json" <<'EOF'
import json, platform, sys, torch, xtrans
device, path = sys.argv[1:]
info = dict(python=sys.version.split()[0], executable=sys.executable, torch=torch.__version__,
            cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
            cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            xtrans=xtrans.__file__, machine=platform.machine(), cpu_threads=torch.get_num_threads())
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                gpu_count=torch.cuda.device_count(), bf16_supported=torch.cuda.is_bf16_supported())
print(json.dumps(info, indent=2))
json.dump(info, open(path, "w"), indent=2)
if device == "cuda" and not info["cuda_available"]:
    sys.exit("this torch has no usable CUDA device (torch.version.cuda = %s)" % torch.version.cuda)
EOF
}

# ---------------------------------------------------------------- CUDA tests
cuda_tests() {
  local files
  files=$(grep -l "skipif(not torch.cuda.is_available()" test/*.py || true)
  if [ -z "$files" ]; then
    echo "no test in test/ skips without CUDA"
    echo '{"selected": 0, "passed": 0, "failed": 0, "error": 0, "skipped": 0, "tests": []}' > "$out/cuda_tests.json"
    return 0
  fi
  set +e
  python -m pytest -q -rs -p no:cacheprovider -k cuda --junitxml="$out/logs/cuda_tests.xml" $files
  local rc=$?
  set -e
  local skips
  skips=$(grep -c "skipif(not torch.cuda.is_available()" $files | awk -F: '{s += $NF} END {print s + 0}')
  python - "$out/logs/cuda_tests.xml" "$out/cuda_tests.json" "$device" "$skips" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
xml_path, path, device, skips_in_source = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tests = []
for case in ET.parse(xml_path).getroot().iter("testcase"):
    status = "passed"
    for tag in ("failure", "error", "skipped"):
        if case.find(tag) is not None:
            status = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
    tests.append(dict(name=f"{case.get('classname')}::{case.get('name')}", status=status,
                      seconds=float(case.get("time", 0))))
counts = {s: sum(t["status"] == s for t in tests) for s in ("passed", "failed", "error", "skipped")}
result = dict(device=device, cuda_skips_in_source=skips_in_source, selected=len(tests), **counts, tests=tests)
json.dump(result, open(path, "w"), indent=2)
print(json.dumps({k: v for k, v in result.items() if k != "tests"}))
if skips_in_source != len(tests):
    print(f"warning: {skips_in_source} CUDA skips in test/ but {len(tests)} tests selected by -k cuda")
bad = counts["failed"] + counts["error"] or (device == "cuda" and counts["passed"] == 0)
sys.exit(1 if bad else 0)
EOF
  [ "$rc" -eq 0 ] || [ "$rc" -eq 5 ]  # 5 = no test collected (reported in the JSON)
}

# ---------------------------------------------------------------- mini_synth stage 1, bf16
train_run() {
  local work=$out/egs/mini_synth/asr1 num_train num_dev bpe updates
  if "$dry_run"; then
    num_train=24; num_dev=6; bpe=40; updates=12
  else
    num_train=1000; num_dev=40; bpe=128; updates=200
  fi
  if [ -z "$corpus" ]; then
    if python -c "import espeakng_loader" 2>/dev/null; then corpus=synth; else corpus=tones; fi
  fi
  rm -rf "$out/egs"
  mkdir -p "$work"
  cp -a egs/TEMPLATE "$out/egs/"
  cp -a egs/mini_synth/asr1/{run.sh,asr.sh,path.sh,utils,local,conf} "$work/"
  cd "$work"
  if [ "$corpus" = synth ]; then
    ./run.sh --stage 1 --stop_stage 3 --nj 4 --bpe_size "$bpe" \
      --local_data_opts "--num_train $num_train --num_dev $num_dev --num_test 4 --nj 8"
  else  # tones (xtrans.testing), for an environment without eSpeak NG: ten words, a small BPE
    bpe=40
    python -c "from xtrans.testing.train_fixtures import make_tiny_corpus as m
m('data', num_train=$num_train, num_dev=$num_dev, vocab_size=$bpe)"
    ./run.sh --stage 2 --stop_stage 3 --nj 4 --bpe_size "$bpe" --test_sets dev
  fi
  # stage 4 imports the random encoder (its CNN fit, conf/pretrain_frontend.yaml, is left out for time)
  ./run.sh --stage 4 --stop_stage 5 --frontend_config "" --test_sets dev
  # training stage 1 as the recipe configures it, in bf16 for $updates updates
  python - "$updates" <<'EOF'
import sys, yaml
cfg = yaml.safe_load(open("conf/train_stage1.yaml"))
cfg["training"].update(precision="bf16", max_updates=int(sys.argv[1]))
cfg["checkpoint"].update(save_interval_updates=int(sys.argv[1]), valid_interval_updates=int(sys.argv[1]))
cfg["logging"].update(log_interval=10, tensorboard=False)
yaml.safe_dump(cfg, open("conf/train_stage1.yaml", "w"), sort_keys=False)
EOF
  local start=$(date +%s)
  ./run.sh --stage 6 --stop_stage 6 --train_stages 1 --ngpu "$ngpu" --train_opts "--no_progress"
  python - exp/stage1 "$out/train.json" "$device" "$corpus" "$num_train" "$(( $(date +%s) - start ))" <<'EOF'
import json, sys
from pathlib import Path
exp, path, device, corpus, num_train, seconds = sys.argv[1:]
steps = [json.loads(line) for line in open(Path(exp) / "steps.jsonl")]
losses = [s["loss"] for s in steps if not s.get("skipped") and "loss" in s]
if len(losses) < 4:
    sys.exit(f"only {len(losses)} updates with a loss in {exp}/steps.jsonl")
k = max(3, len(losses) // 5)
first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
metrics_file = Path(exp) / "metrics.jsonl"
metrics = [json.loads(line) for line in open(metrics_file)] if metrics_file.exists() else []
result = dict(recipe="egs/mini_synth/asr1 stage 6 (training stage 1)", device=device,
              precision="bf16" if device == "cuda" else "fp32 (bf16 autocast needs CUDA)",
              corpus=corpus, num_train=int(num_train), updates=len(losses), seconds=float(seconds),
              updates_per_s=len(losses) / max(float(seconds), 1e-9), first_loss=first, last_loss=last,
              window=k, loss_fell=last < 0.9 * first, dev=metrics[-1] if metrics else None, losses=losses)
json.dump(result, open(path, "w"), indent=2)
print(json.dumps({k: v for k, v in result.items() if k != "losses"}))
if not result["loss_fell"]:
    sys.exit(f"the loss did not fall: mean of the first {k} updates {first:.3f}, of the last {k} {last:.3f}")
EOF
}

# ---------------------------------------------------------------- run
export -f log env_check cuda_tests train_run
export out dry_run device ngpu dtype corpus PYTHON
start_all=$(date +%s)  # the budget counts from here
log "output: $out; python: $PYTHON; device: $device$("$dry_run" && echo " (dry run)")"
step env 60 env.json env_check
if "$dry_run"; then
  step cuda_tests 120 cuda_tests.json cuda_tests
  step train 300 train.json train_run
  step rnnt_loss 120 rnnt_loss_transducer.json python bench/rnnt_loss.py --mode transducer --device cpu \
    --shapes 2,40,8,32 --reps 1 --warmup 0 --out "$out/rnnt_loss_transducer.json"
  step encoder 120 encoder.json python bench/encoder.py --configs tiny --batch 1 --seconds 1 --reps 1 \
    --warmup 0 --out "$out/encoder.json"
  step train_step 120 train_step.json python bench/train_step.py --dry-run --out "$out/train_step.json"
  step train_step_400s 120 train_step_400s.json python bench/train_step.py --dry-run --batch 4 --no-head \
    --losses pruned --attention linear --out "$out/train_step_400s.json"
else
  step cuda_tests 60 cuda_tests.json cuda_tests
  step train 150 train.json train_run
  step rnnt_loss 45 rnnt_loss_transducer.json python bench/rnnt_loss.py --mode transducer --device cuda \
    --reps 5 --out "$out/rnnt_loss_transducer.json"
  step encoder 80 encoder.json python bench/encoder.py --configs xlsr --device cuda --dtype bf16 --batch 25 \
    --seconds 16 --reps 5 --out "$out/encoder.json"
  step train_step 120 train_step.json python bench/train_step.py --device cuda --dtype bf16 --reps 3 \
    --out "$out/train_step.json"
  step train_step_400s 90 train_step_400s.json python bench/train_step.py --device cuda --dtype bf16 \
    --batch 25 --seconds 16 --reps 3 --no-head --out "$out/train_step_400s.json"
fi

python - "$out" "$(( $(date +%s) - start_all ))" "$dry_run" <<'EOF'
import json, sys
from pathlib import Path
out, seconds, dry_run = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "true"
steps = []
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, secs, json_file = line.split("\t")
    steps.append(dict(step=name, ok=rc == "0", exit_status=int(rc), seconds=float(secs), json=json_file,
                      json_exists=(out / json_file).exists()))
summary = dict(dry_run=dry_run, seconds=seconds, ok=all(s["ok"] for s in steps), steps=steps)
(out / "summary.json").write_text(json.dumps(summary, indent=2))
for s in steps:
    print(f"{s['step']:<16} {'ok' if s['ok'] else 'FAILED':<7} {s['seconds']:>6.0f} s  {s['json']}")
print(f"total {seconds:.0f} s; JSON under {out}")
EOF
exit "$failed"
