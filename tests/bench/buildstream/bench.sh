#!/usr/bin/env bash
# BuildStream 2, the peer of tests/bench/builds.sh: the same workspace operations
# on a generated element of N = 10,000 and 100,000 source files. By hand, as root
# (never by CI); results in docs/benchmarks.md.
# Usage: tests/bench/buildstream/bench.sh [N ...]      (default: 10000 100000)
# Env:   RUNS=5 (runs per figure, median reported); KEEP=1 keeps the workspace trees
#        afterwards; WS_BENCH_DIR (default /var/tmp/ws-bench): the venv, projects and
#        results go under $WS_BENCH_DIR/buildstream, never into the checkout.
# Prints a markdown table at the end; full logs in $WS_BENCH_DIR/buildstream/results/.
set -uo pipefail
SCRIPTS="$(cd "$(dirname "$0")" && pwd)"
HERE="${WS_BENCH_DIR:-/var/tmp/ws-bench}/buildstream"
mkdir -p "$HERE"
RUNS=${RUNS:-5}
SIZES=("$@"); [ ${#SIZES[@]} -eq 0 ] && SIZES=(10000 100000)
VENV="$HERE/venv" "$SCRIPTS/install.sh" >/dev/null
cd "$HERE"
PY=venv/bin/python3
BST="$HERE/venv/bin/bst"
RES="$HERE/results"; mkdir -p "$RES"

# run_timed LABEL CMD... : runs CMD, appends its wall time (s) to $RES/$LABEL.times, output to $RES/$LABEL.log
run_timed() {
  local label=$1; shift
  local t0 t1 rc
  sync   # flush dirty pages left by the previous step (not timed), so runs do not pay for each other's writeback
  t0=$(date +%s.%N)
  "$@" >>"$RES/$label.log" 2>&1; rc=$?
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l | xargs printf '%.3f\n' >>"$RES/$label.times"
  return $rc
}
median() { $PY -c 'import sys,statistics as s; v=[float(x) for x in open(sys.argv[1])]; print(f"{s.median(v):.2f}")' "$1"; }
minmax() { $PY -c 'import sys; v=[float(x) for x in open(sys.argv[1])]; print(f"{min(v):.2f}–{max(v):.2f}")' "$1"; }
note() { echo "$*" | tee -a "$RES/notes.txt"; }

: >"$RES/notes.txt"
DONE=()
note "date: $(date -Is)  host load: $(cut -d' ' -f1-3 /proc/loadavg)  io-psi: $(head -1 /proc/pressure/io 2>/dev/null)  bst: $($BST --version)  git: $(git --version)"

for N in "${SIZES[@]}"; do
  P="$HERE/p$N"
  rm -f "$RES"/n$N-*.times "$RES"/n$N-*.log
  $PY "$SCRIPTS/gen_project.py" "$N" "$P" >/dev/null
  # fresh BuildStream state each time (the generated sources are kept)
  rm -rf "$P/cache" "$P/logs" "$P/.bst2" "$P"/ws "$P"/ws[0-9]* "$P/wsfail" "$P/ws.git"; sync
  note "N=$N start $(date +%T)  load: $(cut -d' ' -f1-3 /proc/loadavg)  io-psi: $(head -1 /proc/pressure/io 2>/dev/null)"
  B=("$BST" --no-interactive --no-colors -c "$P/bst.conf" -C "$P")

  # 0. first build (cold cache: casd start, hashing + staging all sources, artifact commit)
  run_timed n$N-0-first-build "${B[@]}" build big.bst || note "N=$N first build FAILED"

  # 1. cached build, no workspace (cache-key hit)
  for i in $(seq $RUNS); do
    run_timed n$N-1-cached-build "${B[@]}" build big.bst || note "N=$N cached build FAILED"
  done
  note "N=$N cached builds that were pure cache hits: $(grep -c "Build Queue: processed 0, skipped 1" "$RES/n$N-1-cached-build.log")/$RUNS"

  # fixed overhead: cached build of the tiny base element (python start, project load, casd start/stop)
  for i in $(seq $RUNS); do
    run_timed n$N-8-overhead "${B[@]}" build base.bst || note "N=$N overhead build FAILED"
  done

  # 2. workspace open: each run opens a NEW directory; between runs the workspace is closed (untimed)
  #    but its directory is kept: on this VM (ext4 mounted with 'discard') deleting a synced tree of
  #    10k-100k files takes 20 s-4 min and stalls the file system for the next step.
  #    (`workspace open --force` over an open workspace crashes in bst 2.8.1: AssertionError
  #    "Attempting to re-open an existing workspace", so it is not used.)
  for i in $(seq $RUNS); do
    run_timed n$N-2-ws-open "${B[@]}" workspace open --directory "$P/ws$i" big.bst || note "N=$N ws open FAILED"
    if [ "$i" -lt "$RUNS" ]; then "${B[@]}" workspace close big.bst >>"$RES/n$N-close.log" 2>&1; fi
  done
  WS="$P/ws$RUNS"

  # first build in the fresh workspace (full build: no previous workspace buildtree yet)
  run_timed n$N-3a-ws-first-build "${B[@]}" build big.bst || note "N=$N ws first build FAILED"

  # git peer: the same workspace tree under git (setup not timed)
  # git dir kept OUTSIDE the workspace, so BuildStream does not hash/stage .git as part of the source
  rm -rf "$P/ws.git"
  G=(git --git-dir="$P/ws.git" --work-tree="$WS")
  ( "${G[@]}" init -q && "${G[@]}" add -A && "${G[@]}" -c gc.auto=0 -c user.email=b@b -c user.name=b commit -qm init \
    && "${G[@]}" gc -q && "${G[@]}" status >/dev/null ) >>"$RES/n$N-git-setup.log" 2>&1

  # 3. edit one file, then bst build (incremental workspace build); git status on the same edited tree
  f=$(cd "$WS" && ls -d d*/* | head -1)
  f="$WS/$f/$(ls "$WS/$f" | sed -n 7p)"
  for i in $(seq $RUNS); do
    echo "edit $i" >>"$f"
    run_timed n$N-5-git-status "${G[@]}" status || note "N=$N git status FAILED"
    run_timed n$N-3-ws-edit-build "${B[@]}" build big.bst || note "N=$N ws edit build FAILED"
  done
  inc=$(grep -c "INFO    Incremental build" "$RES/n$N-3-ws-edit-build.log")
  built=$(grep -c "Build Queue: processed 1, skipped 1" "$RES/n$N-3-ws-edit-build.log")
  note "N=$N edit builds that rebuilt the element: $built/$RUNS, of which announced 'Incremental build': $inc"

  # 4. bst build in the workspace, nothing changed
  for i in $(seq $RUNS); do
    run_timed n$N-4-ws-nochange-build "${B[@]}" build big.bst || note "N=$N ws nochange build FAILED"
  done
  note "N=$N no-change workspace builds that were cache hits: $(grep -c "Build Queue: processed 0, skipped 1" "$RES/n$N-4-ws-nochange-build.log")/$RUNS"

  # extra (1 run): touch one file (mtime only, same content) -> does BuildStream rebuild?
  touch -d '2001-01-01' "$f"
  run_timed n$N-6-ws-touch-build "${B[@]}" build big.bst
  if grep -q "Build Queue: processed 1" "$RES/n$N-6-ws-touch-build.log"; then note "N=$N mtime-only change: element REBUILT ($(cat $RES/n$N-6-ws-touch-build.times) s)"; else note "N=$N mtime-only change: cache hit ($(cat $RES/n$N-6-ws-touch-build.times) s)"; fi

  # extra (1 run): failed build with cached buildtree, then workspace open of the failed element
  "${B[@]}" --cache-buildtrees always build fail.bst >"$RES/n$N-7-fail-build.log" 2>&1 && note "N=$N fail.bst unexpectedly succeeded"
  run_timed n$N-7-ws-open-failed "${B[@]}" workspace open --directory "$P/wsfail" fail.bst
  if [ -e "$P/wsfail/build-output.txt" ]; then note "N=$N workspace open of failed element: buildtree content PRESENT"; else note "N=$N workspace open of failed element: sources only, failed buildtree NOT used ($(cat $RES/n$N-7-ws-open-failed.times) s)"; fi
  "${B[@]}" workspace close fail.bst >>"$RES/n$N-close.log" 2>&1
  if "${B[@]}" shell --use-buildtree fail.bst -- sh -c 'test -e build-output.txt' >"$RES/n$N-7-shell-buildtree.log" 2>&1; then
    note "N=$N 'bst shell --use-buildtree fail.bst' sees the failed buildtree (build-output.txt present)"
  else note "N=$N 'bst shell --use-buildtree fail.bst' FAILED (see results/n$N-7-shell-buildtree.log)"; fi
  # close (keep the directories; they are deleted at the end, after all timings)
  "${B[@]}" workspace close big.bst >>"$RES/n$N-close.log" 2>&1
  DONE+=("$P")
done
note "end: $(date -Is)  host load: $(cut -d' ' -f1-3 /proc/loadavg)  io-psi: $(head -1 /proc/pressure/io 2>/dev/null)"

{
  echo
  echo "| N files | first build (cold) | 1. cached \`bst build\` | 2. \`bst workspace open\` | 3. ws build after 1-file edit | 4. ws build, no change | peer: \`git status\` after 1-file edit | fixed overhead (cached tiny element) |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
  for N in "${SIZES[@]}"; do
    row="| $N | $(median $RES/n$N-0-first-build.times) s"
    for k in 1-cached-build 2-ws-open 3-ws-edit-build 4-ws-nochange-build 5-git-status 8-overhead; do
      row="$row | $(median $RES/n$N-$k.times) s ($(minmax $RES/n$N-$k.times))"
    done
    echo "$row |"
  done
  echo
  echo "Median of $RUNS runs, wall time of the whole command (range in parentheses); first build is 1 run. \`sync\` (untimed) before every timed command."
  echo
  sed 's/^/- /' "$RES/notes.txt"
} | tee "$RES/table.md"

# cleanup of the workspace copies (untimed, after the table; slow on a 'discard' mount). KEEP=1 skips it.
if [ "${KEEP:-0}" != 1 ]; then
  for P in "${DONE[@]}"; do rm -rf "$P"/ws[0-9]* "$P/wsfail" "$P/ws.git"; done
fi
