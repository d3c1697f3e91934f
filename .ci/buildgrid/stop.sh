#!/usr/bin/env bash
# stop.sh DIR: stop the bgd that start.sh DIR started, by the pid in DIR/bgd.pid
# only: TERM, then KILL after BGD_STOP_TIMEOUT seconds (default 10). Succeeds
# when nothing runs.
set -euo pipefail
dir=${1:?usage: stop.sh DIR}
pidfile="$dir/bgd.pid"
[ -f "$pidfile" ] || { echo "stop.sh: no $pidfile, nothing to stop"; exit 0; }
pid=$(cat "$pidfile")
# Alive: exists and is not a zombie (a zombie still passes kill -0).
alive() { kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; }
# A stale pid may belong to another process by now: signal only a bgd.
if ! alive || ! grep -q bgd "/proc/$pid/cmdline" 2>/dev/null; then
    echo "stop.sh: pid $pid is not a running bgd; removing $pidfile"
    rm -f "$pidfile" "$dir/bgd.ready"; exit 0
fi
kill -TERM "$pid"
for _ in $(seq $(( ${BGD_STOP_TIMEOUT:-10} * 10 ))); do
    alive || break
    sleep 0.1
done
how=TERM
if alive; then kill -KILL "$pid"; how=KILL; fi
# Not our child, so no wait: poll until it is gone.
while alive; do sleep 0.1; done
rm -f "$pidfile" "$dir/bgd.ready"
echo "stop.sh: bgd (pid $pid) stopped by $how"
