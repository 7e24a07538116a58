#!/usr/bin/env bash
# An MLflow tracking server for a sweep: jobs log over HTTP and only the server
# writes the SQLite database (SQLite on a shared filesystem locks under
# concurrent writers; many jobs writing one mlflow.db directly lose runs).
#
#   launchers/mlflow_server.sh start [--dir DIR] [--host HOST] [--port PORT|auto] [--workers N]
#   launchers/mlflow_server.sh stop  [--dir DIR]
#   launchers/mlflow_server.sh status [--dir DIR]
#   launchers/mlflow_server.sh url   [--dir DIR]      # prints tracking.uri=http://...
#
# `start` prints the override to give the sweep, e.g.
#   tracking.uri=http://127.0.0.1:5000
#   pet --multirun launcher=slurm ... tracking.uri=http://127.0.0.1:5000
# DIR (default ${PET_OUTPUT_ROOT:-outputs}/mlflow_server) holds mlflow.db,
# mlartifacts/, server.log, server.pid and server.url. On a cluster, run it on
# the login/submit node with --host 0.0.0.0 (the printed URI then uses this
# machine's hostname; the host is added to MLflow's --allowed-hosts) and put
# DIR on storage that survives the sweep. Starting an already running server is
# a no-op that prints its URI. Browse: open the URI in a browser (tunnel the
# port from a cluster).
#
# Environment: PET_MLFLOW (mlflow executable; default <repo>/.venv/bin/mlflow,
# then `mlflow` on PATH), PET_MLFLOW_TIMEOUT (seconds to wait for readiness,
# 60), PET_MLFLOW_ALLOWED_HOSTS (MLflow --allowed-hosts for a non-local host),
# MLFLOW_SERVER_ENABLE_JOB_EXECUTION (default false here: MLflow's GenAI job
# runner, several extra processes a run tracker does not need).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"
[ $# -gt 0 ] && shift
DIR="${PET_OUTPUT_ROOT:-$REPO/outputs}/mlflow_server"
HOST=127.0.0.1
PORT=5000
WORKERS=1  # one process: a single SQLite writer
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR="$2"; shift 2 ;;
    --host) HOST="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "mlflow_server.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
PIDFILE="$DIR/server.pid"
URLFILE="$DIR/server.url"
LOG="$DIR/server.log"
TIMEOUT="${PET_MLFLOW_TIMEOUT:-60}"

find_mlflow() {
  if [ -n "${PET_MLFLOW:-}" ]; then echo "$PET_MLFLOW"
  elif [ -x "$REPO/.venv/bin/mlflow" ]; then echo "$REPO/.venv/bin/mlflow"
  elif command -v mlflow >/dev/null 2>&1; then command -v mlflow
  else echo "mlflow_server.sh: no mlflow executable (set PET_MLFLOW or install mlflow)" >&2; exit 1
  fi
}

healthy() {  # healthy URL -> 0 when /health answers OK
  local url="$1"
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -m 3 "$url/health" >/dev/null 2>&1
  else
    python3 - "$url" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/health", timeout=3)
EOF
  fi
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

case "$cmd" in
  start)
    if pid="$(running_pid)" && [ -f "$URLFILE" ] && healthy "$(cat "$URLFILE")"; then
      echo "MLflow server already running (pid $pid, $DIR)"
      echo "tracking.uri=$(cat "$URLFILE")"
      exit 0
    fi
    [ "$PORT" = auto ] && PORT="$(free_port)"
    if [ "$HOST" = 0.0.0.0 ] || [ "$HOST" = "::" ]; then
      ADVERTISED="$(hostname -f 2>/dev/null || hostname)"
    else
      ADVERTISED="$HOST"
    fi
    URL="http://$ADVERTISED:$PORT"
    if healthy "$URL"; then
      echo "mlflow_server.sh: something already answers on $URL (another server?); pick another --port" >&2
      exit 1
    fi
    EXTRA=()
    case "$HOST" in
      127.0.0.1|localhost) ;;
      *)
        h="$(hostname)"; hf="$(hostname -f 2>/dev/null || echo "$h")"
        EXTRA+=(--allowed-hosts "${PET_MLFLOW_ALLOWED_HOSTS:-$h,$h:$PORT,$hf,$hf:$PORT,localhost,localhost:$PORT,127.0.0.1,127.0.0.1:$PORT,10.*,192.168.*,172.*}")
        ;;
    esac
    MLFLOW="$(find_mlflow)"
    mkdir -p "$DIR/mlartifacts"
    # The server's background job runner (GenAI jobs, several huey processes)
    # is not needed to track runs; keep a sweep's server light.
    export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
    # setsid: the server and its workers form one process group that stop kills.
    setsid "$MLFLOW" server \
      --backend-store-uri "sqlite:///$DIR/mlflow.db" \
      --artifacts-destination "$DIR/mlartifacts" \
      --serve-artifacts \
      --host "$HOST" --port "$PORT" --workers "$WORKERS" \
      ${EXTRA[@]+"${EXTRA[@]}"} >>"$LOG" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$PIDFILE"
    echo "$URL" > "$URLFILE"
    t0=$(date +%s)
    until healthy "$URL"; do
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "mlflow_server.sh: the server exited; last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2
        rm -f "$PIDFILE"
        exit 1
      fi
      if [ $(( $(date +%s) - t0 )) -ge "$TIMEOUT" ]; then
        echo "mlflow_server.sh: no answer from $URL after ${TIMEOUT}s; stopping it. Last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2
        kill -TERM -- "-$pid" 2>/dev/null || true
        rm -f "$PIDFILE"
        exit 1
      fi
      sleep 0.5
    done
    echo "MLflow server up in $(( $(date +%s) - t0 ))s (pid $pid; store sqlite:///$DIR/mlflow.db; log $LOG)"
    echo "tracking.uri=$URL"
    ;;
  stop)
    if ! pid="$(running_pid)"; then
      echo "no MLflow server running for $DIR"
      rm -f "$PIDFILE"
      exit 0
    fi
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    echo "MLflow server (pid $pid) stopped"
    ;;
  status)
    if pid="$(running_pid)" && [ -f "$URLFILE" ] && healthy "$(cat "$URLFILE")"; then
      echo "running: pid $pid, $(cat "$URLFILE"), store sqlite:///$DIR/mlflow.db"
    else
      echo "not running ($DIR)"
      exit 1
    fi
    ;;
  url)
    [ -f "$URLFILE" ] || { echo "no server started for $DIR" >&2; exit 1; }
    echo "tracking.uri=$(cat "$URLFILE")"
    ;;
  *)
    echo "usage: launchers/mlflow_server.sh start|stop|status|url [--dir DIR] [--host HOST] [--port PORT|auto] [--workers N]" >&2
    exit 2
    ;;
esac
