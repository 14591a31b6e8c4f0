#!/usr/bin/env bash
# Scan, defend and a plain safetensors copy of one checkpoint with the page cache emptied before each
# (the disk is read, as for a checkpoint just downloaded or not touched for a while), alternating
# this checkout with another one's source (OLD_SRC, e.g. a `git worktree` of an earlier commit) so
# both see the same machine. Needs root (writes /proc/sys/vm/drop_caches). Wall time and peak RSS
# of each whole command (Python start included), from /usr/bin/time.
# usage: sudo OLD_SRC=/tmp/old/src [OLD_NUMBA=dir] bash benchmarks/cold_cache.sh MODEL ROUNDS
#   e.g. MODEL=/tmp/fg-big/model-2gb-float32 (built by benchmarks/defend_memory.py --gb 2.0 --dir /tmp/fg-big)
set -euo pipefail
M=$1; ROUNDS=${2:-2}; OUT=$(mktemp -d); PY=.venv/bin/python
trap 'rm -rf "$OUT"' EXIT
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
timed() { /usr/bin/time -o "$OUT/t" -f "%e s, peak RSS %M KB" "$@" > /dev/null 2>&1 || true; tail -1 "$OUT/t"; }
for round in $(seq "$ROUNDS"); do
  for v in old new; do
    if [ $v = old ]; then export PYTHONPATH=$OLD_SRC NUMBA_CACHE_DIR=${OLD_NUMBA:-$OUT/old-numba}; else unset PYTHONPATH NUMBA_CACHE_DIR; fi
    if [ "$round" = 1 ]; then  # compile the kernels first (kept in NUMBA_CACHE_DIR or FlipGuard's cache)
      $PY -m flipguard scan "$M" -q > /dev/null 2>&1 || true
      $PY -m flipguard defend "$M" -o "$OUT/warm" --scheme nf4 --policy threshold -q 2>/dev/null; rm -rf "$OUT/warm"
    fi
    cold; s=$(timed $PY -m flipguard scan "$M" -q)
    cold; d=$(OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 timed $PY -m flipguard defend "$M" -o "$OUT/defended" --scheme nf4 --policy threshold -q)
    rm -rf "$OUT/defended"
    cold; c=$(timed $PY -c "import glob, os, sys
from safetensors.torch import load_file, save_file
for f in sorted(glob.glob(os.path.join(sys.argv[1], '*.safetensors'))):
    save_file(load_file(f), os.path.join(sys.argv[2], os.path.basename(f)), metadata={'format': 'pt'})" "$M" "$OUT")
    rm -f "$OUT"/*.safetensors
    echo "round $round $v: scan $s | defend --scheme nf4 --policy threshold, one thread: $d | copy $c"
  done
done
