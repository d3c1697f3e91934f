#!/usr/bin/env bash
# start.sh DIR PORT: start BuildGrid in the background on 127.0.0.1:PORT and wait
# until it answers. It writes into DIR:
#   bgd.pid    the pid of bgd (stop.sh DIR stops it)
#   bgd.ready  written by bgd itself (--pid-file) once its gRPC server has started
#   bgd.log    its output
#   cas/       its disk CAS
# BGD_VENV is the venv of install.sh (default /var/tmp/ws-ci-buildgrid-venv),
# BGD_TIMEOUT the seconds to wait (default 60), BGD_CONFIG the configuration
# (default buildgrid.yml beside this script; buildgrid-tls.yml serves TLS and
# needs more variables, see it). bgd sees this script's environment.
set -euo pipefail
dir=${1:?usage: start.sh DIR PORT}; port=${2:?usage: start.sh DIR PORT}
here=$(cd "$(dirname "$0")" && pwd)
venv=${BGD_VENV:-/var/tmp/ws-ci-buildgrid-venv}
timeout=${BGD_TIMEOUT:-60}
config=${BGD_CONFIG:-$here/buildgrid.yml}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
fail() {
    echo "start.sh: $*" >&2
    [ -f "$dir/bgd.log" ] && { echo "--- last lines of $dir/bgd.log:" >&2; tail -n 30 "$dir/bgd.log" >&2; }
    exit 1
}

[ -x "$venv/bin/bgd" ] || fail "no $venv/bin/bgd: run $here/install.sh $venv first"
[ -f "$config" ] || fail "no configuration $config"
config=$(cd "$(dirname "$config")" && pwd)/$(basename "$config")
if [ -f "$dir/bgd.pid" ] && kill -0 "$(cat "$dir/bgd.pid")" 2>/dev/null; then
    fail "already running with pid $(cat "$dir/bgd.pid") (stop it with $here/stop.sh $dir)"
fi
port_open && fail "port $port on 127.0.0.1 is already in use"
rm -f "$dir/bgd.pid" "$dir/bgd.ready"

# Output to a file and stdin from /dev/null, so that bgd never holds a CI pipe open;
# cwd DIR, for whatever it writes relative to it. exec: $! is bgd itself.
( cd "$dir" && BGD_DIR="$dir" BGD_PORT="$port" exec "$venv/bin/bgd" server start -v \
    --pid-file "$dir/bgd.ready" "$config" >"$dir/bgd.log" 2>&1 </dev/null ) &
pid=$!
echo "$pid" > "$dir/bgd.pid"

# Ready: bgd wrote bgd.ready and the port takes a connection. Polled every 0.1 s.
for _ in $(seq $(( timeout * 10 ))); do
    if [ -f "$dir/bgd.ready" ] && port_open; then
        echo "start.sh: bgd (pid $pid) ready on 127.0.0.1:$port (log $dir/bgd.log)"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/bgd.pid"; fail "bgd (pid $pid) exited during start-up"; }
    sleep 0.1
done
kill -KILL "$pid" 2>/dev/null || true
rm -f "$dir/bgd.pid"
fail "bgd did not answer on 127.0.0.1:$port within ${timeout}s (killed pid $pid)"
