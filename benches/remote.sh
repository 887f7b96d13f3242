#!/usr/bin/env bash
# Remote-sync benchmark: cairn push / put --push / get --remote against rclone and a leeway-style
# tar.gz cache restore, on a real local S3 server (moto), with request counts for both sides.
#
# Usage: bash benches/remote.sh            (see benches/README.md)
#
# Environment:
#   CAIRN=path          cairn binary to test (default: build it with cargo --release into
#                       ${CARGO_TARGET_DIR:-target})
#   CAIRN_REV=text      what to call that binary in the results (e.g. "commit abc1234")
#   BENCH_DIR=dir       trees, the pushed store, the archive, moto's log, results
#                       (default /tmp/cairn-remote-bench)
#   WORK_DIR=dir        what the timed commands create and --prepare deletes again: fresh stores,
#                       restored trees, the downloaded archive (default /dev/shm/cairn-remote-bench
#                       when /dev/shm has 6 GiB free, else $BENCH_DIR/work; see README)
#   RUNS=n WARMUP=n     hyperfine runs per command (default 3) and warmup runs (default 0; the
#                       trees are read just before and stay in the page cache). moto handles
#                       ~100-200 requests/s here, so one rclone copy of 10,000 files takes ~1-2
#                       minutes and the whole run 40-60 minutes.
#   RCLONE_FLAGS=...    extra rclone flags for every rclone command (default "--transfers 8
#                       --checkers 16": cairn's default concurrency is 8 requests in flight)
#   ONLY="1 2 3"        which parts to run (1 fresh push, 2 re-push after 1% change, 3 restore)
#   RESTORE_FILES=0     in part 3, skip the rclone copy of the files from the bucket (~22,000
#                       GETs, ~3 minutes a run here; default 1)
#   KEEP=1              keep BENCH_DIR and WORK_DIR at the end (default: delete the data, keep
#                       $BENCH_DIR/results)
#   FRESH=1             rebuild the trees even if BENCH_DIR already holds them
#   SMALL_FILES=n       files in the small tree (default 10000, 100 B - 64 KiB from /usr/share)
#   MIXED_SOURCES="d1 d2"  folders copied into the mixed tree (default: the Rust toolchain's lib
#                       folder and /usr/share without man/: ~22,000 files, ~1 GB, 10 files > 8 MiB)
#
# The server is moto (Python) started here on a free 127.0.0.1 port; its request log is what
# counts requests, for cairn and rclone alike. All runs are warm-cache.
set -euo pipefail

BENCH_DIR=${BENCH_DIR:-/tmp/cairn-remote-bench}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-0}
RCLONE_FLAGS=${RCLONE_FLAGS:-"--transfers 8 --checkers 16"}
ONLY=${ONLY:-"1 2 3"}
KEEP=${KEEP:-0}
FRESH=${FRESH:-0}
SMALL_FILES=${SMALL_FILES:-10000}
RESTORE_FILES=${RESTORE_FILES:-1}
MOTO_VERSION=5.2.1 # as scripts/services.sh

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SMALL=$BENCH_DIR/small
MIXED=$BENCH_DIR/mixed
STORE=$BENCH_DIR/store # holds both trees, pushed from
ARCHIVE=$BENCH_DIR/mixed.tar.gz
RES=$BENCH_DIR/results
BIN=$BENCH_DIR/bin
MOTO_LOG=$BENCH_DIR/moto.log
SUMMARY=$RES/summary.md

SCRIPT=remote.sh
# Two decimals in ratios and figures.
RATIO_DIGITS=2
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

if [[ -z ${WORK_DIR:-} ]]; then
    if [[ -d /dev/shm ]] && (($(df -B1G --output=avail /dev/shm | tail -n1 | tr -d ' ') >= 6)); then
        WORK_DIR=/dev/shm/cairn-remote-bench
    else
        WORK_DIR=$BENCH_DIR/work
    fi
fi

# Loopback must never go through a proxy; the AWS SDKs (rclone) refuse plain http with a CA bundle.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost"
unset AWS_CA_BUNDLE AWS_PROFILE AWS_SESSION_TOKEN AWS_DEFAULT_PROFILE || true

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
install_tools() {
    need_tools hyperfine jq rclone curl /usr/bin/time:time
    if ! python3 -c 'import moto.server, moto.s3' 2>/dev/null; then
        log "installing moto[s3]==$MOTO_VERSION"
        python3 -m pip install --quiet --disable-pip-version-check "moto[s3]==$MOTO_VERSION" flask flask-cors
    fi
    check_tools hyperfine jq rclone curl gzip tar
}


# ---------------------------------------------------------------------------------------------
# The trees
# ---------------------------------------------------------------------------------------------
# small: SMALL_FILES files of 100 B - 64 KiB picked from /usr/share (seeded, so reruns pick the
# same); mixed: the Rust toolchain's lib folder (89 files, 10 of them > 8 MiB, up to 200 MB)
# and /usr/share without man/ (~22,000 files of every size).
make_trees() {
    if [[ $FRESH != 1 && -f $BENCH_DIR/trees.ready ]]; then
        log "reusing the trees in $BENCH_DIR (FRESH=1 rebuilds them)"
        return
    fi
    rm -rf "$SMALL" "$MIXED" "$BENCH_DIR/trees.ready"
    mkdir -p "$SMALL" "$MIXED"
    log "small tree: $SMALL_FILES files of 100 B - 64 KiB from /usr/share"
    find /usr/share -type f -size +99c -size -65537c -print0 | sort -z |
        shuf -z -n "$SMALL_FILES" --random-source=<(yes cairn) >"$BENCH_DIR/small.src"
    tar -cf - --null -T "$BENCH_DIR/small.src" 2>/dev/null | tar -xf - -C "$SMALL"
    local src sources
    sources=${MIXED_SOURCES:-"$(rustc --print sysroot)/lib /usr/share"}
    for src in $sources; do
        log "mixed tree: copying $src"
        cp -a "$src" "$MIXED/$(basename "$src")"
    done
    [[ -n ${MIXED_SOURCES:-} ]] || rm -rf "$MIXED/share/man"
    find "$SMALL" "$MIXED" -type s -delete
    # rclone skips symlinks (or turns them into .rclonelink files with --links) and does not
    # copy empty folders: keep both trees to what both tools copy alike, regular files.
    find "$SMALL" "$MIXED" -type l -delete
    find "$SMALL" "$MIXED" -depth -type d -empty -delete
    sync
    touch "$BENCH_DIR/trees.ready"
}

tree_stats() { # files bytes files>8MiB
    find "$1" -type f -printf '%s\n' |
        awk '{n++; s+=$1; if ($1 > 8388608) b++} END {printf "%d %.0f %d\n", n, s, b}'
}

# ---------------------------------------------------------------------------------------------
# moto (started by lib.sh's start_moto)
# ---------------------------------------------------------------------------------------------
# The environment both tools run with (credentials, endpoint; rclone's remote "moto").
tool_env() {
    export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
    export AWS_ENDPOINT_URL=$MOTO AWS_ALLOW_HTTP=true
    export RCLONE_CONFIG_MOTO_TYPE=s3 RCLONE_CONFIG_MOTO_PROVIDER=Other
    export RCLONE_CONFIG_MOTO_ENDPOINT=$MOTO RCLONE_CONFIG_MOTO_REGION=us-east-1
    export RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=test RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=test
    export RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE=true RCLONE_LOG_LEVEL=ERROR
    # cairn's remotes, one per bucket/prefix used below. (object_store's from_env reads
    # AWS_ENDPOINT_URL, but cairn's client options drop AWS_ALLOW_HTTP, so --option it is.)
    export CAIRN_CONFIG=$BENCH_DIR/cairn.toml
    rm -f "$CAIRN_CONFIG"
    local r
    for r in push/small push/mixed repush/mixed restore/mixed; do
        "$CAIRN" remote add "${r/\//-}" "s3://$r" --option "aws_endpoint=$MOTO" \
            --option aws_allow_http=true >/dev/null
    done
}

# ---------------------------------------------------------------------------------------------
# Helpers run by hyperfine's --prepare (sh), and request counting
# ---------------------------------------------------------------------------------------------
write_helpers() {
    mkdir -p "$BIN" "$RES" "$WORK_DIR"
    # Wipes moto (every bucket), recreates bucket $1, deletes the other arguments.
    cat >"$BIN/reset.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
curl -sf -o /dev/null -X POST "$MOTO/moto-api/reset"
curl -sf -o /dev/null -X PUT "$MOTO/\$1"
shift
rm -rf "\$@"
EOF
    # Appends a line to a different 1% of the mixed tree's files on every call.
    find "$MIXED" -type f -print0 >"$BENCH_DIR/mixed.list"
    cat >"$BIN/touch1pct.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
c=\$(( \$(cat "$BENCH_DIR/touch.counter" 2>/dev/null || echo 0) + 1 ))
echo "\$c" >"$BENCH_DIR/touch.counter"
n=\$(( \$(tr -cd '\\0' <"$BENCH_DIR/mixed.list" | wc -c) / 100 ))
shuf -z -n "\$n" --random-source=<(yes "cairn-remote-bench-\$c") "$BENCH_DIR/mixed.list" |
    while IFS= read -r -d '' f; do printf 'cairn-remote-bench touch %s\n' "\$c" >>"\$f"; done
EOF
    chmod +x "$BIN"/*.sh
}

# Counts the requests moto logged while "$@" ran: prints "total GET PUT HEAD POST DELETE" and
# writes the command's stdout to $COUNT_OUT (a file).
COUNT_OUT=/dev/null
count_requests() {
    local before after
    before=$(wc -l <"$MOTO_LOG")
    "$@" >"$COUNT_OUT"
    sleep 0.5 # the log line is written after the response
    after=$(wc -l <"$MOTO_LOG")
    tail -n +"$((before + 1))" "$MOTO_LOG" | head -n "$((after - before))" |
        awk '/"(GET|PUT|HEAD|POST|DELETE) / {
                 split($0, q, "\""); split(q[2], m, " "); c[m[1]]++; n++
             }
             END {printf "%d %d %d %d %d %d\n", n, c["GET"], c["PUT"], c["HEAD"], c["POST"], c["DELETE"]}'
}
req_text() { # "total GET PUT HEAD POST DELETE" -> "N (G GET, P PUT, ...)"
    read -r n g p h po d <<<"$1"
    local parts=()
    ((p)) && parts+=("$p PUT")
    ((po)) && parts+=("$po POST")
    ((g)) && parts+=("$g GET")
    ((h)) && parts+=("$h HEAD")
    ((d)) && parts+=("$d DELETE")
    local IFS=,
    printf '%s (%s)' "$n" "$(echo "${parts[*]}" | sed 's/,/, /g')"
}

# rclone's own count of what it moved: "bytes transfers" from its final stats.
rclone_stats() {
    awk '/"stats":/ {line=$0} END {print line}' "$1" |
        jq -r '.stats | "\(.bytes) \(.transfers)"' 2>/dev/null || echo "? ?"
}
RCLONE=(rclone --use-json-log --log-level NOTICE --stats 1h --stats-log-level NOTICE)

mb() { awk -v a="$1" 'BEGIN {printf "%.1f MB", a / 1e6}'; }
note() { printf '%s\n' "$*" >>"$SUMMARY"; }

# ---------------------------------------------------------------------------------------------
# 1. Push of a fresh tree
# ---------------------------------------------------------------------------------------------
bench_push_fresh() {
    local name=$1 tree=$2 key=bench/$1
    local url=push-$name fresh=$WORK_DIR/fresh-store l0
    l0=$(load)
    log "1. fresh push, $name tree: cairn push, cairn put --push, rclone copy"
    # Each run: an empty moto, and (for push) a store whose ledger knows nothing of it.
    hf --export-json "$RES/push-$name.json" \
        --prepare "bash '$BIN/reset.sh' push '$STORE/remotes'" \
        -n "cairn push" "'$CAIRN' --store '$STORE' -q push $url $key" \
        --prepare "bash '$BIN/reset.sh' push '$fresh'" \
        -n "cairn put --push" "'$CAIRN' --store '$fresh' -q put $key '$tree' --push $url" \
        --prepare "bash '$BIN/reset.sh' push" \
        -n "rclone copy" "rclone $RCLONE_FLAGS copy '$tree' moto:push/$name"
    local a b c
    a=$(median "$RES/push-$name.json" 0) b=$(median "$RES/push-$name.json" 1) c=$(median "$RES/push-$name.json" 2)

    # One more run of each, counted on the server.
    local rq_push rq_put rq_rc js bytes_c rc_bytes
    bash "$BIN/reset.sh" push "$STORE/remotes"
    COUNT_OUT=$RES/push-$name.cairn.json
    rq_push=$(count_requests "$CAIRN" --store "$STORE" -q --json push "$url" "$key")
    bytes_c=$(jq -r .requests.bytes_up "$COUNT_OUT")
    COUNT_OUT=/dev/null
    bash "$BIN/reset.sh" push "$fresh"
    rq_put=$(count_requests "$CAIRN" --store "$fresh" -q put "$key" "$tree" --push "$url")
    bash "$BIN/reset.sh" push
    rq_rc=$(count_requests "${RCLONE[@]}" $RCLONE_FLAGS copy "$tree" "moto:push/$name" --log-file "$RES/push-$name.rclone.log")
    read -r rc_bytes _ <<<"$(rclone_stats "$RES/push-$name.rclone.log")"
    rm -rf "$fresh"

    local r
    r=$(ratio "$a" "$c")
    printf '| %s | cairn push | %s | %sx | %s | %s | %s |\n' "$name" "$(fmt "$a")" "$r" "$(met_le "$r" 0.5)" \
        "$(req_text "$rq_push")" "$(mb "$bytes_c")" >>"$SUMMARY"
    r=$(ratio "$b" "$c")
    printf '| %s | cairn put --push | %s | %sx | | %s | |\n' "$name" "$(fmt "$b")" "$r" "$(req_text "$rq_put")" >>"$SUMMARY"
    printf '| %s | rclone copy | %s | 1 | | %s | %s |\n' "$name" "$(fmt "$c")" "$(req_text "$rq_rc")" "$(mb "$rc_bytes")" >>"$SUMMARY"
    echo "push-$name: cairn push min/rclone min $(ratio "$(minimum "$RES/push-$name.json" 0)" "$(minimum "$RES/push-$name.json" 2)")x; load $l0 -> $(load)" >>"$RES/notes.txt"
}

# ---------------------------------------------------------------------------------------------
# 2. Re-push after changing 1% of the files
# ---------------------------------------------------------------------------------------------
bench_repush() {
    local key=bench/mixed url=repush-mixed
    log "2. re-push of the mixed tree after changing 1% of its files"
    bash "$BIN/reset.sh" repush "$STORE/remotes"
    "$CAIRN" --store "$STORE" -q put "$key" "$MIXED" >/dev/null
    local first
    first=$("$CAIRN" --store "$STORE" -q --json push "$url" "$key" | jq -r .requests.bytes_up)
    rclone $RCLONE_FLAGS copy "$MIXED" moto:repush/rclone
    # Timed: each run changes a different 1% (prepare), then stores and pushes it / copies it.
    hf --export-json "$RES/repush.json" \
        --prepare "bash '$BIN/touch1pct.sh'" \
        -n "cairn put --push (1% changed)" "'$CAIRN' --store '$STORE' -q put $key '$MIXED' --push $url" \
        --prepare "bash '$BIN/touch1pct.sh'" \
        -n "rclone copy (1% changed)" "rclone $RCLONE_FLAGS copy '$MIXED' moto:repush/rclone"
    local a b
    a=$(median "$RES/repush.json" 0) b=$(median "$RES/repush.json" 1)

    # Counted: the push alone (after a local put), the put --push cycle, and rclone.
    local rq_push rq_put rq_rc js js2 bytes_push bytes_put rc_bytes rc_files
    bash "$BIN/touch1pct.sh"
    "$CAIRN" --store "$STORE" -q put "$key" "$MIXED" >/dev/null
    COUNT_OUT=$RES/repush.cairn-push.json
    rq_push=$(count_requests "$CAIRN" --store "$STORE" -q --json push "$url" "$key")
    bytes_push=$(jq -r .requests.bytes_up "$COUNT_OUT")
    bash "$BIN/touch1pct.sh"
    COUNT_OUT=$RES/repush.cairn-put-push.json
    rq_put=$(count_requests "$CAIRN" --store "$STORE" -q --json put "$key" "$MIXED" --push "$url")
    bytes_put=$(jq -s -r '.[-1].requests.bytes_up' "$COUNT_OUT") # put's summary, then push's
    COUNT_OUT=/dev/null
    bash "$BIN/touch1pct.sh"
    rq_rc=$(count_requests "${RCLONE[@]}" $RCLONE_FLAGS copy "$MIXED" moto:repush/rclone --log-file "$RES/repush.rclone.log")
    read -r rc_bytes rc_files <<<"$(rclone_stats "$RES/repush.rclone.log")"
    touch "$BENCH_DIR/rclone-copy.current" # repush/rclone now holds the current tree (part 3)

    local pct
    pct=$(awk -v a="$bytes_push" -v b="$first" 'BEGIN {printf "%.2f", 100 * a / b}')
    note ""
    note "| re-push, 1% of ${MIXED_FILES} files changed | median s | ratio | requests | bytes up | of the first push |"
    note "| --- | --- | --- | --- | --- | --- |"
    note "| cairn put --push | $(fmt "$a") | $(ratio "$a" "$b")x | $(req_text "$rq_put") | $(mb "${bytes_put:-0}") | |"
    note "| cairn push (after put) | | | $(req_text "$rq_push") | $(mb "$bytes_push") | ${pct}% (target ≤ 3%: $(met_le "$pct" 3)) |"
    note "| rclone copy | $(fmt "$b") | 1 | $(req_text "$rq_rc") | $(mb "$rc_bytes") ($rc_files files) | |"
    note ""
    note "First push of the tree: $(mb "$first")."
}

# ---------------------------------------------------------------------------------------------
# 3. Cold restore
# ---------------------------------------------------------------------------------------------
# Runs "$@" under /usr/bin/time -v; prints "maxrss_kb seconds".
rss() {
    local out=$1
    shift
    /usr/bin/time -v -o "$out" "$@" >/dev/null 2>"$out.err" || die "failed: $* (see $out.err)"
    local max secs
    max=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$out")
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$out" |
        awk -F: '{s=0; for (i=1; i<=NF; i++) s = s*60 + $i; print s}')
    echo "$max $secs"
}

bench_restore() {
    local key=bench/mixed url=restore-mixed
    local cold=$WORK_DIR/cold-store dest=$WORK_DIR/dest dl=$WORK_DIR/dl
    log "3. cold restore: cairn get --remote vs download + tar -xzf, and rclone copy of the files"
    # Not a reset: part 2 left rclone's copy of the current tree in repush/rclone.
    curl -s -o /dev/null -X PUT "$MOTO/restore"
    rm -rf "$STORE/remotes"
    "$CAIRN" --store "$STORE" -q put "$key" "$MIXED" >/dev/null
    "$CAIRN" --store "$STORE" -q push "$url" "$key"
    tar -czf "$ARCHIVE" -C "$MIXED" .
    rclone $RCLONE_FLAGS copyto "$ARCHIVE" moto:restore/mixed.tar.gz
    local files=moto:repush/rclone
    if [[ $RESTORE_FILES == 1 && ! -f $BENCH_DIR/rclone-copy.current ]]; then
        files=moto:restore/files
        rclone $RCLONE_FLAGS copy "$MIXED" "$files"
    fi
    local arch_bytes
    arch_bytes=$(stat -c %s "$ARCHIVE")

    local clean="rm -rf '$cold' '$dest' '$dl'; mkdir -p '$dest' '$dl'"
    local extra=()
    [[ $RESTORE_FILES != 1 ]] || extra=(--prepare "$clean" -n "rclone copy (files)" "rclone $RCLONE_FLAGS copy $files '$dest'")
    hf --export-json "$RES/restore.json" \
        --prepare "$clean" \
        -n "cairn get --remote (cold store)" "'$CAIRN' --store '$cold' -q get $key '$dest' --remote $url" \
        --prepare "$clean" \
        -n "rclone copyto + tar -xzf" "rclone $RCLONE_FLAGS copyto moto:restore/mixed.tar.gz '$dl/mixed.tar.gz' && tar -xzf '$dl/mixed.tar.gz' -C '$dest'" \
        --prepare "$clean" \
        -n "rclone cat | tar -xzf" "rclone cat moto:restore/mixed.tar.gz | tar -xzf - -C '$dest'" \
        "${extra[@]}"
    local a b c d
    a=$(median "$RES/restore.json" 0) b=$(median "$RES/restore.json" 1)
    c=$(median "$RES/restore.json" 2) d=
    [[ $RESTORE_FILES != 1 ]] || d=$(median "$RES/restore.json" 3)

    # Counted and RSS-measured runs.
    local rq_get rq_dl rq_curl rq_rc m_get m_dl m_tar m_curl m_rc
    eval "$clean"
    rq_get=$(count_requests "$CAIRN" --store "$cold" -q get "$key" "$dest" --remote "$url")
    eval "$clean"
    m_get=$(rss "$RES/rss-get.time" "$CAIRN" --store "$cold" -q get "$key" "$dest" --remote "$url")
    diff -r --no-dereference "$MIXED" "$dest" >/dev/null || die "cairn get restored a different tree"
    eval "$clean"
    rq_dl=$(count_requests rclone $RCLONE_FLAGS copyto moto:restore/mixed.tar.gz "$dl/mixed.tar.gz")
    rq_curl=$(count_requests rclone cat moto:restore/mixed.tar.gz)
    eval "$clean"
    m_dl=$(rss "$RES/rss-rclone-copyto.time" rclone $RCLONE_FLAGS copyto moto:restore/mixed.tar.gz "$dl/mixed.tar.gz")
    m_tar=$(rss "$RES/rss-tar.time" tar -xzf "$dl/mixed.tar.gz" -C "$dest")
    eval "$clean"
    m_curl=$(rss "$RES/rss-cat-tar.time" bash -c "set -o pipefail; rclone cat moto:restore/mixed.tar.gz | tar -xzf - -C '$dest'")
    if [[ $RESTORE_FILES == 1 ]]; then
        eval "$clean"
        rq_rc=$(count_requests rclone $RCLONE_FLAGS copy "$files" "$dest")
        eval "$clean"
        m_rc=$(rss "$RES/rss-rclone-copy.time" rclone $RCLONE_FLAGS copy "$files" "$dest")
    fi
    rm -rf "$cold" "$dest" "$dl"

    local r
    note ""
    note "| cold restore of the mixed tree | median s | ratio to rclone copyto + tar | target | requests | peak RSS |"
    note "| --- | --- | --- | --- | --- | --- |"
    r=$(ratio "$a" "$b")
    note "| cairn get --remote, empty store | $(fmt "$a") | ${r}x | ≤ 0.5x: $(met_le "$r" 0.5) | $(req_text "$rq_get") | $((${m_get% *} / 1024)) MB |"
    note "| rclone copyto tar.gz, then tar -xzf | $(fmt "$b") | 1 | | $(req_text "$rq_dl") | rclone $((${m_dl% *} / 1024)) MB, tar -xzf $((${m_tar% *} / 1024)) MB |"
    note "| rclone cat \\| tar -xzf (streamed) | $(fmt "$c") | $(ratio "$c" "$b")x | | $(req_text "$rq_curl") | $((${m_curl% *} / 1024)) MB (largest process) |"
    [[ $RESTORE_FILES != 1 ]] ||
        note "| rclone copy of the files | $(fmt "$d") | $(ratio "$d" "$b")x | | $(req_text "$rq_rc") | $((${m_rc% *} / 1024)) MB |"
    note ""
    note "cairn get vs rclone cat | tar: $(ratio "$a" "$c")x$([[ $RESTORE_FILES != 1 ]] || echo "; vs rclone copy of the files: $(ratio "$a" "$d")x"). Archive: $(mb "$arch_bytes") (tar -czf, gzip -6)."
}

# ---------------------------------------------------------------------------------------------
machine_info() {
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
        echo "cpu: $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
        echo "memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
        echo "filesystems: trees and pushed store on $(df --output=fstype "$BENCH_DIR" | tail -n1) ($BENCH_DIR), outputs on $(df --output=fstype "$WORK_DIR" | tail -n1) ($WORK_DIR)"
        echo "cairn: $CAIRN_REV"
        echo "rclone: $(rclone version 2>/dev/null | head -n1), flags: $RCLONE_FLAGS"
        echo "moto: $(python3 -c 'import moto; print(moto.__version__)'), hyperfine: $(hyperfine --version | cut -d' ' -f2)"
        echo "runs: $RUNS (+ $WARMUP warmup) per command; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    }
}

cleanup() {
    stop_moto
    if [[ $KEEP != 1 ]]; then
        rm -rf "$WORK_DIR" "$SMALL" "$MIXED" "$STORE" "$ARCHIVE" "$BENCH_DIR/trees.ready"
    fi
}

main() {
    install_tools
    build_cairn store remote cli
    mkdir -p "$BENCH_DIR"
    rm -rf "$RES"
    mkdir -p "$RES"
    make_trees
    trap cleanup EXIT
    start_moto
    tool_env
    write_helpers
    rm -f "$BENCH_DIR/rclone-copy.current"
    local s
    read -r SMALL_FILES_N SMALL_BYTES _ <<<"$(tree_stats "$SMALL")"
    read -r MIXED_FILES MIXED_BYTES MIXED_LARGE <<<"$(tree_stats "$MIXED")"
    {
        echo "# cairn remote benchmark"
        echo
        machine_info | sed 's/^/    /'
        echo
        echo "small tree: $SMALL_FILES_N files, $(mb "$SMALL_BYTES"); mixed tree: $MIXED_FILES files, $(mb "$MIXED_BYTES"), $MIXED_LARGE files > 8 MiB"
        echo
    } >"$SUMMARY"

    log "storing both trees in $STORE"
    rm -rf "$STORE"
    "$CAIRN" --store "$STORE" -q put bench/small "$SMALL" >/dev/null
    "$CAIRN" --store "$STORE" -q put bench/mixed "$MIXED" >/dev/null

    for s in $ONLY; do
        case $s in
        1)
            note "| tree | command | median s | ratio to rclone | ≤ 0.5x | requests (server log) | bytes up |"
            note "| --- | --- | --- | --- | --- | --- | --- |"
            bench_push_fresh small "$SMALL"
            bench_push_fresh mixed "$MIXED"
            ;;
        2) bench_repush ;;
        3) bench_restore ;;
        esac
    done
    note ""
    note "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    log "results"
    cat "$SUMMARY"
    echo
    cat "$RES/notes.txt" 2>/dev/null || true
}

main "$@"
