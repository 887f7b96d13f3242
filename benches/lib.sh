#!/usr/bin/env bash
# What the benchmark scripts share: logging, installing tools, building cairn, timing with
# hyperfine and turning its JSON into medians and ratios. Sourced by each script after it sets
# SCRIPT (its name, for messages), REPO, RUNS and WARMUP.

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "${SCRIPT:-bench}" "$*" >&2; exit 1; }

# need_tools CMD... : installs (with apt-get) the Debian packages that provide the missing
# commands; each argument is CMD or CMD:PACKAGE. Fails naming what is still missing.
need_tools() {
    local missing=() pkgs=() t cmd pkg
    for t in "$@"; do
        cmd=${t%%:*}
        pkg=${t#*:}
        if [[ $cmd == /* ]]; then
            [[ -x $cmd ]] || { missing+=("$cmd"); pkgs+=("$pkg"); }
        else
            command -v "$cmd" >/dev/null || { missing+=("$cmd"); pkgs+=("$pkg"); }
        fi
    done
    ((${#missing[@]})) || return 0
    log "installing ${pkgs[*]}"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    local available=()
    for pkg in "${pkgs[@]}"; do
        if apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            available+=("$pkg")
        fi
    done
    ((${#available[@]} == 0)) ||
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${available[@]}" >/dev/null
}

# check_tools CMD... : fails unless every command is there.
check_tools() {
    local t
    for t in "$@"; do
        if [[ $t == /* ]]; then [[ -x $t ]] || die "$t is still missing"
        else command -v "$t" >/dev/null || die "$t is still missing"; fi
    done
}

# build_cairn [PATHS...]: sets CAIRN (built with cargo --release into ${CARGO_TARGET_DIR:-target}
# unless given) and CAIRN_REV (the commit, marked when PATHS of the checkout have changes).
build_cairn() {
    if [[ -n ${CAIRN:-} ]]; then
        [[ -x $CAIRN ]] || die "CAIRN=$CAIRN is not executable"
        CAIRN=$(realpath "$CAIRN")
        CAIRN_REV=${CAIRN_REV:-"commit unknown (binary given with CAIRN=)"}
        return
    fi
    local paths=("$@")
    ((${#paths[@]})) || paths=(store remote oci cli)
    CAIRN_REV="commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    git -C "$REPO" diff --quiet HEAD -- "${paths[@]}" Cargo.toml Cargo.lock 2>/dev/null ||
        CAIRN_REV+=" + uncommitted changes"
    local target=${CARGO_TARGET_DIR:-$REPO/target}
    log "building cairn (release) into $target"
    (cd "$REPO" && CARGO_TARGET_DIR=$target cargo build --release -q -p cairn)
    CAIRN=$target/release/cairn
}

# purge_trash [SECONDS]: deletes $TRASH's contents, then waits for ext4 to settle (file creation
# right after mass deletions is slow on this machine's disk: docs/benchmarks.md, F0).
purge_trash() {
    [[ -d $TRASH && -n $(ls -A "$TRASH") ]] || return 0
    log "emptying the trash, then waiting ${1:-$SETTLE}s for the deleted inodes to age"
    rm -rf "$TRASH"
    mkdir -p "$TRASH"
    sync
    sleep "${1:-$SETTLE}"
}

# Reading hyperfine's JSON (FILE INDEX) and formatting numbers.
median() { jq -r ".results[$2].median" "$1"; }
minimum() { jq -r ".results[$2].min" "$1"; }
stddev() { jq -r ".results[$2].stddev" "$1"; }
ratio() { awk -v a="$1" -v b="$2" -v d="${RATIO_DIGITS:-3}" 'BEGIN {printf "%.*f", d, a / b}'; }
min_ratio() { ratio "$(minimum "$1" 0)" "$(minimum "$1" 1)"; }
fmt() { awk -v a="$1" -v d="${RATIO_DIGITS:-3}" 'BEGIN {printf "%.*f", d, a}'; }
met_le() { awk -v r="$1" -v t="$2" 'BEGIN {print (r <= t) ? "yes" : "no"}'; }
met_ge() { awk -v r="$1" -v t="$2" 'BEGIN {print (r >= t) ? "yes" : "no"}'; }
load() { cut -d' ' -f1 /proc/loadavg; }
hf() { hyperfine --style basic --warmup "$WARMUP" --runs "$RUNS" "$@"; }

# A private moto (S3) server on a free 127.0.0.1 port: start_moto sets MOTO (its URL) and logs
# requests to $MOTO_LOG; stop_moto kills it. The caller installs moto.
MOTO_PID=
start_moto() {
    MOTO_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    MOTO=http://127.0.0.1:$MOTO_PORT
    log "starting moto on $MOTO (log: $MOTO_LOG)"
    python3 -m moto.server -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_LOG" 2>&1 </dev/null &
    MOTO_PID=$!
    local i
    for i in $(seq 1 150); do
        curl -s -o /dev/null --max-time 2 "$MOTO/" && return 0
        kill -0 "$MOTO_PID" 2>/dev/null || die "moto exited: $(tail -n 5 "$MOTO_LOG")"
        sleep 0.2
    done
    die "moto did not start"
}
stop_moto() {
    [[ -z $MOTO_PID ]] || kill "$MOTO_PID" 2>/dev/null || true
    MOTO_PID=
}
