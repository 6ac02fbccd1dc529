# Each recipe stage's wall time, for RESULTS.md: source this file, set stage_t0=$SECONDS when a stage
# starts and call `stage_took N "what it did"` when it ends. It logs the time (with the caller's log
# function) and keeps one line per stage, "N<TAB>seconds<TAB>what", sorted by N, in $stage_times_file
# (default exp/stage_times.tsv); running a stage again replaces its line.
stage_times_file=${stage_times_file:-exp/stage_times.tsv}
stage_t0=$SECONDS
stage_took() {  # stage number, what it did
  local secs=$((SECONDS - stage_t0))
  log "stage $1 took ${secs} s ($2)"
  mkdir -p "$(dirname "$stage_times_file")"
  { grep -v "^$1	" "$stage_times_file" 2>/dev/null || true; printf "%s\t%s\t%s\n" "$1" "$secs" "$2"; } \
    | sort -n -k1,1 > "$stage_times_file.tmp"
  mv "$stage_times_file.tmp" "$stage_times_file"
}
