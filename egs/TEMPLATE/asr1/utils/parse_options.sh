# Kaldi-style command-line options for recipe scripts. Source it after defining the defaults:
#
#   stage=1            # first recipe stage to run
#   stop_stage=12      # last recipe stage to run
#   ngpu=0             # GPUs for training
#   use_beam=false     # beam search when decoding (true/false)
#   help_message="Usage: $0 [options]"
#   . utils/parse_options.sh
#
# Then `./run.sh --stage 6 --stop-stage 10 --use_beam true extra args` sets stage=6,
# stop_stage=10, use_beam=true and leaves "extra args" in "$@".
#
# Rules (those of Kaldi's utils/parse_options.sh, stricter where Kaldi is lax):
#   --name value     sets the variable `name`; dashes in the name become underscores
#                    (--stop-stage = --stop_stage); --name=value is accepted too.
#   An option whose variable was not defined before sourcing (when the calling script can be
#   read: not assigned at the start of a line before the `. utils/parse_options.sh` line) is an
#   error, so a typo never passes silently.
#   A variable whose default is true or false is boolean: it accepts only true or false.
#   --help / -h      prints $help_message, then every option with its current default and the
#                    comment written after its definition; exits 0.
#   --               ends the options; the first argument that does not start with -- does too.
# Errors print a message naming the option to stderr and exit 1 (the calling script exits).
#
# Works under `set -euo pipefail`. Each recipe links this folder as its utils/ (ESPnet convention):
#   egs/<corpus>/asr1/utils -> ../../TEMPLATE/asr1/utils

# The calling script, to read its option definitions (empty when sourced from an interactive shell).
__po_caller="${BASH_SOURCE[1]:-}"

# Prints "name<TAB>comment" for every `name=...` line at the start of a line in the calling
# script before the line that sources this file.
__po_declared() {
  [ -n "$__po_caller" ] && [ -r "$__po_caller" ] || return 0
  awk '
    /^[[:space:]]*(\.|source)[[:space:]]+[^[:space:]]*parse_options\.sh/ { exit }
    /^[A-Za-z_][A-Za-z0-9_]*=/ {
      name = $0; sub(/=.*/, "", name)
      comment = ""
      if (match($0, /[[:space:]]#[[:space:]]?.*$/)) { comment = substr($0, RSTART, RLENGTH); sub(/^[[:space:]]*#[[:space:]]?/, "", comment) }
      print name "\t" comment
    }' "$__po_caller"
}

__po_is_option() {  # name -> status 0 when --name is a valid option
  local __po_n=$1 __po_declared_names
  [ "$__po_n" != help_message ] || return 1
  __po_declared_names=$(__po_declared | cut -f1)
  if [ -n "$__po_declared_names" ]; then
    # No `printf | grep -q` here: under pipefail, grep leaving at the first match while printf still
    # writes (bash writes its stdout a line at a time) fails the pipeline with SIGPIPE, now and then.
    case $'\n'"$__po_declared_names"$'\n' in
      *$'\n'"$__po_n"$'\n'*) ;;
      *) return 1 ;;
    esac
  fi
  # Kaldi's rule: the variable must exist
  eval '[ -n "${'"$__po_n"'+set}" ]'
}

__po_help() {
  local __po_n __po_comment __po_v
  if [ -n "${help_message:-}" ]; then
    printf '%s\n' "$help_message"
  else
    printf 'Usage: %s [options]\n' "$(basename "${0}")"
  fi
  printf '\nOptions (default in brackets):\n'
  while IFS=$'\t' read -r __po_n __po_comment; do
    [ -n "$__po_n" ] && [ "$__po_n" != help_message ] || continue
    __po_v=$(eval 'printf "%s" "${'"$__po_n"'-}"')
    printf '  --%-24s [%s]%s\n' "$__po_n" "$__po_v" "${__po_comment:+  $__po_comment}"
  done < <(__po_declared | awk -F'\t' '!seen[$1]++')
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      __po_help
      exit 0 ;;
    --)
      shift
      break ;;
    --*)
      __po_arg=${1#--}
      if [[ "$__po_arg" == *=* ]]; then
        __po_value=${__po_arg#*=}
        __po_arg=${__po_arg%%=*}
        __po_nargs=1
      else
        if [ $# -lt 2 ]; then
          echo "$0: option $1 needs a value (--name value)" >&2
          exit 1
        fi
        __po_value=$2
        __po_nargs=2
      fi
      __po_name=${__po_arg//-/_}
      if ! [[ "$__po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || ! __po_is_option "$__po_name"; then
        echo "$0: unknown option --$__po_arg (run with --help for the options)" >&2
        exit 1
      fi
      __po_old=$(eval 'printf "%s" "${'"$__po_name"'}"')
      if [ "$__po_old" = true ] || [ "$__po_old" = false ]; then
        if [ "$__po_value" != true ] && [ "$__po_value" != false ]; then
          echo "$0: option --$__po_arg is boolean: expected true or false, found '$__po_value'" >&2
          exit 1
        fi
      fi
      printf -v "$__po_name" '%s' "$__po_value"
      shift "$__po_nargs" ;;
    *)
      break ;;
  esac
done

unset -f __po_declared __po_is_option __po_help
unset __po_caller __po_arg __po_value __po_nargs __po_name __po_old
true
