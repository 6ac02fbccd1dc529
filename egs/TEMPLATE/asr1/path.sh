# Makes the installed xtrans usable: activates the repository's virtual environment (made by
# `make install`) when there is one; otherwise the current python must have xtrans installed.
_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$_repo/.venv/bin/activate" ]; then
  . "$_repo/.venv/bin/activate"
fi
if ! python -c "import xtrans" 2>/dev/null; then
  echo "path.sh: the python on PATH ($(command -v python || echo none)) cannot import xtrans;" \
       "run 'make install' at the repository root or 'pip install -e .' in your environment" >&2
  return 1 2>/dev/null || exit 1
fi
export PYTHONUNBUFFERED=1
unset _repo
