#!/usr/bin/env bash
# The GPU check on a bare GPU box, in one command (about five minutes on one H100; unmeasured so far).
#
# Installs the wheels of the pack (`make gpu-pack`: MONAI and SimpleITK for the box's Python) into a temporary
# folder (pip install --target, no network; removed at the end), checks that every package PASeg imports is
# there, then runs benchmarks/gpu_suite.py with the pack's dataset: the CUDA tests, AMP steps of the three
# networks, the mCRF and the torch geodesic on CUDA against their references, 40 stage-one and 10 SCM
# iterations of the real training loop at 128x128x48 with the smoothed mCRF (iterations/s, data_wait, peak
# memory), sliding-window prediction of 256x256x64, a 1-GPU DDP run, and a short stage-one row on the pack's
# la_heart cases with Dice. Each section
# writes its figures to --out as soon as it ends (and to $OUT when set); a failed one is rerun alone with
# --only SECTION (the other sections' figures of the same device are kept).
#
# Usage:
#   bash benchmarks/gpu_check.sh [--pack DIR] [--dry-run] [--only SECTION ...] [--out FILE] [gpu_suite options]
#     --pack DIR   the pack folder (default gpu_pack/ in the repository root; $PASEG_GPU_PACK)
#     --dry-run    every step on the CPU at toy size (what the test runs)
#     --out FILE   the summary JSON (default bench_output/gpu_check.json)
#   Python: $PYTHON, else .venv/bin/python when present, else python3.
#
# On the device machine (its `run` tool), after `make gpu-pack` here:
#   run(command="bash benchmarks/gpu_check.sh", carry=["gpu_pack"], timeout_s=420)
#   run(command="bash benchmarks/gpu_check.sh --only training", carry=["gpu_pack"])   # one section again
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACK="${PASEG_GPU_PACK:-$ROOT/gpu_pack}"
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pack)
      [ $# -ge 2 ] || { echo "gpu_check: error: --pack needs a folder" >&2; exit 2; }
      PACK="$2"; shift 2 ;;
    --pack=*) PACK="${1#--pack=}"; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then
  PY="$ROOT/.venv/bin/python"
else
  PY=python3
fi
command -v "$PY" >/dev/null 2>&1 || { echo "gpu_check: error: no Python at '$PY' (set PYTHON)" >&2; exit 1; }
if [ -e "$PACK" ] && [ ! -d "$PACK" ]; then
  echo "gpu_check: error: --pack $PACK is not a folder" >&2; exit 1
fi

SITE="$(mktemp -d "${TMPDIR:-/tmp}/paseg-gpu-check.XXXXXX")"
trap 'rm -rf "$SITE"' EXIT
shopt -s nullglob
WHEELS=("$PACK"/wheels/*.whl)
shopt -u nullglob
if [ ${#WHEELS[@]} -gt 0 ]; then
  started=$(date +%s)
  if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
      --target "$SITE" "${WHEELS[@]}"
  else  # no pip: a wheel is a zip of its files (these wheels have no scripts or data folders)
    "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
      "$SITE" "${WHEELS[@]}"
  fi
  echo "gpu_check: installed ${#WHEELS[@]} wheel(s) of $PACK into $SITE in $(( $(date +%s) - started )) s" >&2
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  export PASEG_PACK_SITE="$SITE"
elif [ -d "$PACK" ]; then
  echo "gpu_check: $PACK holds no wheels; using the installed packages" >&2
else
  echo "gpu_check: no pack at $PACK (make gpu-pack); using the installed packages and a synthetic dataset" >&2
fi

# what PASeg imports at run time (pyproject.toml's dependencies and the train extra), and pytest for the tests
"$PY" - <<'EOF'
import importlib.util
import sys

needed = ("torch", "monai", "SimpleITK", "numpy", "scipy", "skimage", "matplotlib", "tqdm", "pytest")
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"gpu_check: error: {sys.executable} lacks {', '.join(missing)}: run `make gpu-pack` where pip can "
             f"download (add --wheel NAME==VERSION for each missing package but torch) and carry gpu_pack/")
EOF

# from the caller's folder, so that relative --pack, --out and --work paths mean what they say
status=0
"$PY" "$ROOT/benchmarks/gpu_suite.py" --pack "$PACK" --out "$ROOT/bench_output/gpu_check.json" \
  ${ARGS[@]+"${ARGS[@]}"} || status=$?
exit "$status"
