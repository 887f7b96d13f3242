#!/usr/bin/env bash
# Local-store benchmark: cairn put / get / verify against tar|zstd and b3sum on a real ~1 GB
# tree, plus peak RSS of put and get on that tree and on a ~10 GB one.
#
# Usage: bash benches/store.sh            (see benches/README.md)
#
# Environment:
#   CAIRN=path          cairn binary to test (default: build it with cargo --release into
#                       ${CARGO_TARGET_DIR:-target})
#   CAIRN_REV=text      what to call that binary in the results (e.g. "commit abc1234")
#   BENCH_DIR=dir       work folder (default /tmp/cairn-bench); everything goes in here
#   RUNS=n WARMUP=n     hyperfine runs per command (default 5) and warmup runs (default 1)
#   BIG=0               skip the ~10 GB RSS measurement
#   BIG_RANDOM_GIB=n    GiB of random data in the big tree (default 4, in 2 files)
#   BIG_COPIES=n        copies of the 1 GB tree in the big tree (default 5)
#   MIN_FREE_GIB=n      refuse the big tree unless this much stays free after it (default 20)
#   KEEP=1              keep the work folder at the end (default: delete the big files only)
#   FRESH=1             rebuild the tree even if BENCH_DIR already holds one
#   SETTLE=s            seconds to wait after deleting many files (default 65; see purge_trash)
#   SOURCES="d1 d2"     folders copied into the tree (default: "$(rustc --print sysroot)/lib
#                       /usr/share"; each must have a different base name)
#
# All runs are warm-cache: dropping the page cache is not reliably possible on shared machines,
# so every tool reads its input from memory. Results go to $BENCH_DIR/results/.
set -euo pipefail

BENCH_DIR=${BENCH_DIR:-/tmp/cairn-bench}
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
BIG=${BIG:-1}
BIG_RANDOM_GIB=${BIG_RANDOM_GIB:-4}
BIG_COPIES=${BIG_COPIES:-5}
MIN_FREE_GIB=${MIN_FREE_GIB:-20}
KEEP=${KEEP:-0}
FRESH=${FRESH:-0}
SETTLE=${SETTLE:-65}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TREE=$BENCH_DIR/tree
STORE=$BENCH_DIR/store
ARCHIVE=$BENCH_DIR/tree.tar.zst
TRASH=$BENCH_DIR/trash
DEST=$BENCH_DIR/dest
RES=$BENCH_DIR/results
BIN=$BENCH_DIR/bin
KEY=bench/tree

SCRIPT=store.sh
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
install_tools() {
    # b3sum is packaged in Debian 12+; elsewhere fall back to cargo below.
    need_tools hyperfine zstd jq /usr/bin/time:time tar b3sum
    if ! command -v b3sum >/dev/null; then
        log "b3sum is not packaged here: cargo install b3sum"
        cargo install --locked b3sum
        export PATH=$HOME/.cargo/bin:$PATH
    fi
    check_tools hyperfine zstd jq b3sum tar
}


# ---------------------------------------------------------------------------------------------
# The tree: the Rust toolchain's lib folder plus /usr/share, copied with cp -a
# ---------------------------------------------------------------------------------------------
make_tree() {
    if [[ $FRESH != 1 && -f $BENCH_DIR/tree.ready ]]; then
        log "reusing $TREE (FRESH=1 rebuilds it)"
        return
    fi
    rm -rf "$TREE" "$BENCH_DIR/tree.ready"
    mkdir -p "$TREE"
    local src sources
    sources=${SOURCES:-"$(rustc --print sysroot)/lib /usr/share"}
    for src in $sources; do
        log "copying $src into $TREE/$(basename "$src")"
        cp -a "$src" "$TREE/$(basename "$src")"
    done
    # Sockets cannot be stored (nor archived by tar); there are normally none in these folders.
    find "$TREE" -type s -delete
    sync
    touch "$BENCH_DIR/tree.ready"
}

# Prints "files bytes" of regular files under $1 (apparent sizes).
tree_stats() {
    find "$1" -type f -printf '%s\n' | awk '{n++; s+=$1} END {printf "%d %.0f\n", n, s}'
}

# Helper scripts run by hyperfine's --prepare (which uses sh, so they are separate files).
write_helpers() {
    mkdir -p "$BIN" "$RES"
    find "$TREE" -type f -print0 >"$BENCH_DIR/files.list"
    # Appends a line to a different 1% of the tree's files on every call (seeded by a counter,
    # so a rerun touches the same sequence of files).
    mkdir -p "$TRASH"
    cat >"$BIN/touch1pct.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
c=\$(( \$(cat "$BENCH_DIR/touch.counter" 2>/dev/null || echo 0) + 1 ))
echo "\$c" >"$BENCH_DIR/touch.counter"
n=\$(( \$(tr -cd '\\0' <"$BENCH_DIR/files.list" | wc -c) / 100 ))
shuf -z -n "\$n" --random-source=<(yes "cairn-bench-\$c") "$BENCH_DIR/files.list" |
    while IFS= read -r -d '' f; do printf 'cairn-bench touch %s\n' "\$c" >>"\$f"; done
mkdir -p "$TRASH"
[[ ! -e "$ARCHIVE" ]] || mv "$ARCHIVE" "$TRASH/archive.\$c"
sync
EOF
    chmod +x "$BIN/touch1pct.sh"
    # Moves its arguments into the trash instead of deleting them; see purge_trash.
    cat >"$BIN/aside.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
mkdir -p "$TRASH"
for p in "\$@"; do
    [[ ! -e \$p ]] || mv "\$p" "$TRASH/\$(basename "\$p").\$(date +%s%N)"
done
sync
EOF
    chmod +x "$BIN/aside.sh"
}

# Deleting tens of thousands of files and creating as many right after is pathologically slow
# on ext4 without a journal (as on the machine these results come from): its inode allocator
# skips inodes freed in the last 60 s (300 s while their inode-table block is dirty), scanning
# the group bitmap with a buffer-cache lookup per candidate (recently_deleted() in
# fs/ext4/ialloc.c). So timed runs never follow a mass deletion: --prepare moves the previous
# run's output into the trash, which is emptied only at the end (and, if an earlier run left
# one, at the start, followed by a sync and a wait of SETTLE seconds).

# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------
# Ratio of the two commands' fastest runs in $1 (less sensitive to other load than the median).
# The 1-minute load average, to show how busy the machine was.

SUMMARY=$RES/summary.md
row() { printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$@" >>"$SUMMARY"; }


bench_put_fresh() {
    local l0
    l0=$(load)
    log "1. put into a fresh store vs tar | zstd -T0 -3"
    hf --export-json "$RES/put.json" \
        --prepare "bash '$BIN/aside.sh' '$STORE' '$ARCHIVE'" \
        -n "cairn put" "'$CAIRN' --store '$STORE' -q put $KEY '$TREE'" \
        --prepare "bash '$BIN/aside.sh' '$STORE' '$ARCHIVE'" \
        -n "tar|zstd" "tar -cf - -C '$TREE' . | zstd -T0 -3 -q -o '$ARCHIVE' && sync"
    local a b
    a=$(median "$RES/put.json" 0) b=$(median "$RES/put.json" 1)
    row "put, fresh store" "$(fmt "$a")" "tar\\|zstd: $(fmt "$b")" "$(ratio "$a" "$b")x" "≤ 1.0x" "$(met_le "$(ratio "$a" "$b")" 1.0)" \
        "$(min_ratio "$RES/put.json")x" "$l0 / $(load)"
}

bench_put_incremental() {
    local l0
    l0=$(load)
    log "2. put after modifying 1% of the files, into a store holding the tree, vs tar | zstd"
    bash "$BIN/aside.sh" "$STORE" "$ARCHIVE"
    "$CAIRN" --store "$STORE" -q put "$KEY" "$TREE" >/dev/null
    sync
    hf --export-json "$RES/put-1pct.json" \
        --prepare "bash '$BIN/touch1pct.sh'" \
        -n "cairn put (1% changed)" "'$CAIRN' --store '$STORE' -q put $KEY '$TREE'" \
        --prepare "bash '$BIN/touch1pct.sh'" \
        -n "tar|zstd" "tar -cf - -C '$TREE' . | zstd -T0 -3 -q -o '$ARCHIVE' && sync"
    local a b
    a=$(median "$RES/put-1pct.json" 0) b=$(median "$RES/put-1pct.json" 1)
    row "put, 1% of files changed" "$(fmt "$a")" "tar\\|zstd: $(fmt "$b")" "$(ratio "$a" "$b")x" "≤ 0.15x" "$(met_le "$(ratio "$a" "$b")" 0.15)" \
        "$(min_ratio "$RES/put-1pct.json")x" "$l0 / $(load)"
}

bench_get() {
    local l0
    l0=$(load)
    log "3. get into an empty folder vs zstd -d | tar -x"
    # Both sides restore the same (current) tree.
    "$CAIRN" --store "$STORE" -q put "$KEY" "$TREE" >/dev/null
    tar -cf - -C "$TREE" . | zstd -T0 -3 -q -f -o "$ARCHIVE"
    sync
    hf --export-json "$RES/get.json" \
        --prepare "bash '$BIN/aside.sh' '$DEST'; mkdir -p '$DEST'" \
        -n "cairn get" "'$CAIRN' --store '$STORE' -q get $KEY '$DEST'" \
        --prepare "bash '$BIN/aside.sh' '$DEST'; mkdir -p '$DEST'" \
        -n "zstd -d|tar -x" "zstd -d -q -c '$ARCHIVE' | tar -xf - -C '$DEST'"
    bash "$BIN/aside.sh" "$DEST"
    local a b
    a=$(median "$RES/get.json" 0) b=$(median "$RES/get.json" 1)
    row "get into an empty folder" "$(fmt "$a")" "zstd -d\\|tar -x: $(fmt "$b")" "$(ratio "$a" "$b")x" "≤ 1.0x" "$(met_le "$(ratio "$a" "$b")" 1.0)" \
        "$(min_ratio "$RES/get.json")x" "$l0 / $(load)"
}

bench_verify() {
    local l0
    l0=$(load)
    log "4. verify vs b3sum"
    local vbytes
    vbytes=$("$CAIRN" --store "$STORE" -q --json verify "$KEY" | jq -r .bytes)
    hf --export-json "$RES/verify.json" \
        -n "cairn verify" "'$CAIRN' --store '$STORE' -q verify $KEY" \
        -n "b3sum" "find '$TREE' -type f -print0 | xargs -0 b3sum >/dev/null"
    local a b ta tb r
    a=$(median "$RES/verify.json" 0) b=$(median "$RES/verify.json" 1)
    ta=$(awk -v n="$vbytes" -v t="$a" 'BEGIN {print n / t / 1e6}')
    tb=$(awk -v n="$TREE_BYTES" -v t="$b" 'BEGIN {print n / t / 1e6}')
    r=$(ratio "$ta" "$tb")
    echo "verify: cairn hashed $vbytes bytes (deduplicated blobs), b3sum $TREE_BYTES bytes" >>"$RES/notes.txt"
    row "verify (throughput)" "$(fmt "$a") s = $(printf '%.0f' "$ta") MB/s" "b3sum: $(fmt "$b") s = $(printf '%.0f' "$tb") MB/s" "${r}x" "≥ 0.5x" "$(met_ge "$r" 0.5)" \
        "$(ratio "$(awk -v n="$vbytes" -v t="$(minimum "$RES/verify.json" 0)" 'BEGIN {print n / t}')" \
            "$(awk -v n="$TREE_BYTES" -v t="$(minimum "$RES/verify.json" 1)" 'BEGIN {print n / t}')")x" "$l0 / $(load)"
}

# Runs "$@" under /usr/bin/time -v and samples the process's RssAnon/RssFile every 50 ms.
# Prints "maxrss_kb peak_anon_kb peak_file_kb seconds".
measure_rss() {
    local out=$1
    shift
    /usr/bin/time -v -o "$out.time" "$@" >/dev/null 2>"$out.err" &
    local tpid=$! pid="" anon=0 file=0 a f
    while kill -0 "$tpid" 2>/dev/null; do
        [[ -n $pid ]] || pid=$(pgrep -P "$tpid" 2>/dev/null | head -n1 || true)
        if [[ -n $pid && -r /proc/$pid/status ]]; then
            read -r a f < <(awk '/^RssAnon:/ {a=$2} /^RssFile:/ {f=$2} END {print a+0, f+0}' "/proc/$pid/status" 2>/dev/null || echo "0 0") || true
            ((a > anon)) && anon=$a
            ((f > file)) && file=$f
        fi
        sleep 0.05
    done
    wait "$tpid" || die "failed: $* (see $out.err)"
    local max secs
    max=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$out.time")
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$out.time" |
        awk -F: '{s=0; for (i=1; i<=NF; i++) s = s*60 + $i; print s}')
    echo "$max $anon $file $secs"
}

rss_row() {
    local what=$1 m=$2
    read -r max anon file secs <<<"$m"
    local mb=$((max / 1024))
    printf '| %s | %d MB | %d MB | %d MB | %s s | < 200 MB | %s |\n' "$what" "$mb" $((anon / 1024)) \
        $((file / 1024)) "$secs" "$( ((mb < 200)) && echo yes || echo no)" >>"$SUMMARY"
}

bench_rss() {
    local label=$1 tree=$2 files=$3 bytes=$4
    log "5. peak RSS of put and get on $label"
    local store=$BENCH_DIR/rss-store dest=$BENCH_DIR/rss-dest m
    m=$(measure_rss "$RES/rss-put-$label" "$CAIRN" --store "$store" -q put "$KEY" "$tree")
    rss_row "put, $label ($files files, $((bytes / 1000000)) MB)" "$m"
    sync
    m=$(measure_rss "$RES/rss-get-$label" "$CAIRN" --store "$store" -q get "$KEY" "$dest")
    rss_row "get, $label" "$m"
    bash "$BIN/aside.sh" "$store" "$dest"
}

make_big_tree() {
    local big=$BENCH_DIR/big need avail
    # The big tree, its store (copies dedupe; random data is stored raw) and a get of it.
    need=$(((BIG_COPIES + 1) * TREE_BYTES / 1073741824 + 3 * BIG_RANDOM_GIB + MIN_FREE_GIB + 2))
    avail=$(df -B1G --output=avail "$BENCH_DIR" | tail -n1 | tr -d ' ')
    if ((avail < need)); then
        log "skipping the big tree: ${avail} GiB free in $BENCH_DIR, need ${need} GiB (keeping ${MIN_FREE_GIB} GiB free)"
        return 1
    fi
    rm -rf "$big"
    mkdir -p "$big"
    log "making the big tree in $big: $BIG_COPIES copies of the tree + $BIG_RANDOM_GIB GiB of random data"
    for i in $(seq 1 "$BIG_COPIES"); do cp -a "$TREE" "$big/copy$i"; done
    local half=$((BIG_RANDOM_GIB * 512))
    for i in 1 2; do head -c "${half}M" /dev/urandom >"$big/random$i.bin"; done
    sync
}

machine_info() {
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
        echo "cpu: $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
        echo "memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
        echo "kernel: $(uname -r)"
        echo "work dir: $BENCH_DIR on $(findmnt -no FSTYPE -T "$BENCH_DIR") ($(findmnt -no SOURCE -T "$BENCH_DIR"))"
        echo "cairn: $("$CAIRN" --version), $CAIRN_REV"
        echo "rustc: $(rustc --version)"
        echo "hyperfine: $(hyperfine --version)"
        echo "zstd: $(zstd --version)"
        echo "tar: $(tar --version | head -n1)"
        echo "b3sum: $(b3sum --version)"
        echo "tree: $TREE_FILES files, $TREE_BYTES bytes ($((TREE_BYTES / 1000000)) MB), $(find "$TREE" -type d | wc -l) dirs, $(find "$TREE" -type l | wc -l) symlinks"
    } | tee "$RES/machine.txt" >&2
}

main() {
    install_tools
    build_cairn store cli
    mkdir -p "$BENCH_DIR"
    make_tree
    write_helpers
    rm -f "$RES"/*.json "$RES/notes.txt"
    read -r TREE_FILES TREE_BYTES < <(tree_stats "$TREE")
    purge_trash
    # Nothing is deleted while timing, so every run's output stays until the end: per run a
    # store + an archive (~1x the tree) and two restored copies (2x the tree).
    local need avail
    need=$(((RUNS + WARMUP + 2) * 3 * TREE_BYTES / 1073741824 + MIN_FREE_GIB))
    avail=$(df -B1G --output=avail "$BENCH_DIR" | tail -n1 | tr -d ' ')
    ((avail >= need)) || die "$avail GiB free in $BENCH_DIR; need $need GiB (lower RUNS or MIN_FREE_GIB)"
    machine_info
    {
        echo "# cairn local-store benchmark ($(date -u +%Y-%m-%d), warm cache, hyperfine medians of $RUNS runs after $WARMUP warmup)"
        echo
        echo "| comparison | cairn median (s) | peer median (s) | ratio | target | met? | ratio of fastest runs | load before/after |"
        echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    } >"$SUMMARY"
    bench_put_fresh
    bench_put_incremental
    bench_get
    bench_verify
    {
        echo
        echo "| run | max RSS (time -v) | peak RssAnon | peak RssFile | wall | target | met? |"
        echo "| --- | --- | --- | --- | --- | --- | --- |"
    } >>"$SUMMARY"
    read -r f b < <(tree_stats "$TREE")
    bench_rss 1GB "$TREE" "$f" "$b"
    # RSS does not depend on the allocator's detour: free the space for the big tree now.
    [[ $BIG != 1 ]] || purge_trash 0
    if [[ $BIG == 1 ]] && make_big_tree; then
        read -r f b < <(tree_stats "$BENCH_DIR/big")
        bench_rss 10GB "$BENCH_DIR/big" "$f" "$b"
        bash "$BIN/aside.sh" "$BENCH_DIR/big"
    fi
    if [[ $KEEP != 1 ]]; then
        rm -rf "$STORE" "$ARCHIVE" "$DEST" "$BENCH_DIR/big" "$TRASH"
    fi
    log "results ($RES)"
    cat "$RES/machine.txt" "$SUMMARY"
    [[ ! -f $RES/notes.txt ]] || cat "$RES/notes.txt"
}

main "$@"
