#!/usr/bin/env bash
# Cache lifecycle benchmark (issue 13):
#   1. remote gc of KEYS keys (FILES_PER_KEY small files each) on moto, against downloading
#      every key record with rclone (the floor of reading them all), with request counts;
#   2. local eviction of a size-capped store on the real disk (BIG_KEYS keys of 100 MiB, a cap
#      that needs ~1.5 GiB evicted), against rm -rf of the same keys restored as folders;
#   3. what recording a key's last use adds to `cairn get`, of a one-file key (TINY_PAIRS pairs,
#      where it shows most) and of a 1 GB tree (PAIRS pairs): in each pair one get records the
#      use (its clock a further 2 h ahead each time, via faketime), one does not (its clock
#      within the hour of the last recorded use), in alternating order; geometric mean of the
#      pair ratios (the order effect cancels out).
#   1b. (with part 1, REPACK=1) repacking: 60 % of the keys of part 1 removed, so the packs
#      `push --all` filled are under half live; one remote gc repacks them (copies what the
#      remaining records reach into new packs, re-points the records), against rclone moving
#      the same packs and the remaining records through this machine (download, upload: the
#      objects a client-side repack reads and writes, without deciding anything).
#
# Usage: bash benches/lifecycle.sh          (see benches/README.md)
#
# Environment:
#   CAIRN=path CAIRN_REV=text   binary to test (default: build it, see lib.sh)
#   BENCH_DIR=dir       everything (default /tmp/cairn-life-bench, on the real disk); results
#                       in $BENCH_DIR/results
#   KEYS=n              part 1 keys (default 10000); FILES_PER_KEY=n (default 10)
#   BIG_KEYS=n          part 2 keys of 100 MiB (default 105: 10.5 GiB; needs ~14 GB free)
#   TREE=dir            part 3 tree (default: store.sh's, a copy of the Rust toolchain's lib
#                       folder and /usr/share made in $BENCH_DIR/tree, ~1.2 GB)
#   PAIRS=n TINY_PAIRS=n  part 3 pairs (default 6 and 40; the tree's outputs stay on disk until
#                       the end: PAIRS x 2 x 1.1 GB); RUNS=n part 1 hyperfine runs (default 3)
#   ONLY="1 2 3"        which parts; KEEP=1 keeps the data (default: only results stay)
#   REPACK=0            skips 1b
set -euo pipefail

BENCH_DIR=${BENCH_DIR:-/tmp/cairn-life-bench}
KEYS=${KEYS:-10000}
FILES_PER_KEY=${FILES_PER_KEY:-10}
BIG_KEYS=${BIG_KEYS:-105}
PAIRS=${PAIRS:-6}
TINY_PAIRS=${TINY_PAIRS:-40}
RUNS=${RUNS:-3}
WARMUP=0
ONLY=${ONLY:-"1 2 3"}
KEEP=${KEEP:-0}
REPACK=${REPACK:-1}
MOTO_VERSION=5.2.1 # as scripts/services.sh

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RES=$BENCH_DIR/results
MOTO_LOG=$BENCH_DIR/moto.log
SUMMARY=$RES/summary.md
SCRIPT=lifecycle.sh
RATIO_DIGITS=2
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost"
unset AWS_CA_BUNDLE AWS_PROFILE AWS_SESSION_TOKEN AWS_DEFAULT_PROFILE || true

note() { printf '%s\n' "$*" >>"$SUMMARY"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }

need_tools hyperfine jq rclone curl faketime
if [[ " $ONLY " == *" 1 "* ]] && ! python3 -c 'import moto.server, moto.s3' 2>/dev/null; then
    log "installing moto[s3]==$MOTO_VERSION"
    python3 -m pip install --quiet --disable-pip-version-check "moto[s3]==$MOTO_VERSION" flask flask-cors
fi
check_tools hyperfine jq rclone curl faketime
build_cairn
mkdir -p "$RES"
trap 'stop_moto' EXIT
{
    echo "# cairn lifecycle benchmark"
    echo
    echo "$CAIRN_REV; $(date -u +%FT%TZ); $(nproc) cores; load at start $(load)"
    echo
} >"$SUMMARY"

# ---------------------------------------------------------------------------------------------
# 1. Remote gc over KEYS key records on moto
# ---------------------------------------------------------------------------------------------
part1() {
    local src=$BENCH_DIR/keys store=$BENCH_DIR/store-remote cfg=$BENCH_DIR/cairn.toml
    log "1. $KEYS keys of $FILES_PER_KEY files: making the sources"
    rm -rf "$src" "$store"
    python3 - "$src" "$KEYS" "$FILES_PER_KEY" <<'EOF'
import os, sys
root, keys, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for k in range(keys):
    d = os.path.join(root, f"k{k:05}")
    os.makedirs(d)
    for f in range(per):
        with open(os.path.join(d, f"f{f}"), "w") as fh:
            fh.write(f"key {k} file {f}\n" * (1 + (k * 7 + f) % 40))
EOF
    log "1. putting $KEYS keys (2 at a time)"
    local t0 t1
    t0=$(now)
    find "$src" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort |
        xargs -P2 -I{} "$CAIRN" --quiet --store "$store" put "life/{}" "$src/{}" >/dev/null
    t1=$(now)
    log "1. starting moto"
    start_moto
    curl -sf -o /dev/null -X PUT "$MOTO/life"
    export CAIRN_CONFIG=$cfg
    rm -f "$cfg"
    "$CAIRN" remote add gcb "s3://life/gc" --option "aws_endpoint=$MOTO" \
        --option aws_allow_http=true --option aws_access_key_id=test \
        --option aws_secret_access_key=test --option aws_region=us-east-1 >/dev/null
    export RCLONE_CONFIG_MOTO_TYPE=s3 RCLONE_CONFIG_MOTO_PROVIDER=Other
    export RCLONE_CONFIG_MOTO_ENDPOINT=$MOTO RCLONE_CONFIG_MOTO_REGION=us-east-1
    export RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=test RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=test
    export RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE=true RCLONE_LOG_LEVEL=ERROR
    log "1. pushing every key"
    local t2 t3
    t2=$(now)
    "$CAIRN" --quiet --store "$store" --json push gcb --all >"$RES/push.json"
    t3=$(now)
    # A tenth of the keys go: their records now, their objects at a later gc (they share packs
    # with live keys here, so this run's mark tombstones nothing; it reads every record).
    log "1. removing every tenth key from the remote"
    find "$src" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | awk 'NR % 10 == 1 {print "life/" $0}' |
        xargs "$CAIRN" --quiet --store "$store" rm --remote gcb >/dev/null
    sleep 2
    log "1. remote gc against rclone copy of keys/ (hyperfine, $RUNS runs)"
    local l0 copy=$BENCH_DIR/keys-copy
    l0=$(load)
    hf --export-json "$RES/remote-gc.json" \
        --prepare "rm -rf $copy" \
        -n "cairn remote gc" "$CAIRN --quiet --store $store --json remote gc gcb --grace 1s >$RES/gc.json" \
        -n "rclone copy keys/" "rclone copy moto:life/gc/keys $copy --transfers 8 --checkers 16"
    local gc_med rc_med
    gc_med=$(median "$RES/remote-gc.json" 0)
    rc_med=$(median "$RES/remote-gc.json" 1)
    local live gets lists heads puts
    live=$(jq -r .keys "$RES/gc.json")
    gets=$(jq -r .mark_requests.gets "$RES/gc.json")
    lists=$(jq -r .mark_requests.lists "$RES/gc.json")
    heads=$(jq -r .mark_requests.heads "$RES/gc.json")
    puts=$(jq -r .mark_requests.puts "$RES/gc.json")
    {
        echo "## 1. Remote gc of $live key records ($KEYS pushed, every tenth removed; $((KEYS * FILES_PER_KEY)) files) on moto"
        echo
        echo "Put of $KEYS keys: $(secs "$t0" "$t1") s (2 at a time); push --all: $(secs "$t2" "$t3") s."
        echo
        echo "| command | median (s) | ratio |"
        echo "| --- | --- | --- |"
        echo "| \`cairn remote gc gcb --grace 1s\` | $(fmt "$gc_med") | $(ratio "$gc_med" "$rc_med") |"
        echo "| \`rclone copy moto:…/keys\` (every record downloaded, 8 transfers) | $(fmt "$rc_med") | 1 |"
        echo
        echo "Mark requests of the last run: $gets GET ($(ratio "$gets" "$live") per record), $lists LIST pages, $heads HEAD, $puts PUT (lease, markers). Load $l0 → $(load)."
        echo
    } >>"$SUMMARY"
    [[ $REPACK == 1 ]] && part1b "$src" "$store"
    stop_moto
    [[ $KEEP == 1 ]] || rm -rf "$src" "$store" "$copy"
}

# 1b. Repacking the packs of part 1 once most of their keys are gone
part1b() {
    local src=$1 store=$2 moved=$BENCH_DIR/packs-moved
    log "1b. removing keys until 60 % are gone (NR % 10 in 2..6, besides part 1's tenth)"
    find "$src" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort |
        awk '{m = NR % 10} m >= 2 && m <= 6 {print "life/" $0}' |
        xargs "$CAIRN" --quiet --store "$store" rm --remote gcb >/dev/null
    "$CAIRN" --quiet --store "$store" --json remote gc gcb --grace 1s --dry-run >"$RES/repack-dry.json"
    local packs
    packs=$(jq -r '.repacked | length' "$RES/repack-dry.json")
    log "1b. $packs packs to repack: cairn remote gc, then rclone moving the packs and records"
    local l0 t0 t1 t2 t3
    l0=$(load)
    t0=$(now)
    "$CAIRN" --quiet --store "$store" --json remote gc gcb --grace 1s >"$RES/repack.json"
    t1=$(now)
    rm -rf "$moved"
    t2=$(now)
    # The old packs (tombstoned now, swept by a later run): down to this machine, then up again.
    jq -r '.repacked[]' "$RES/repack.json" | sed 's/^pack blake3://' |
        awk '{print substr($1, 1, 2) "/" $1 ".pack"}' >"$BENCH_DIR/repacked.txt"
    rclone copy moto:life/gc/packs "$moved/packs" --files-from "$BENCH_DIR/repacked.txt" --transfers 8
    rclone copy moto:life/gc/keys "$moved/keys" --transfers 8 --checkers 16
    rclone copy "$moved" moto:life/moved --transfers 8 --checkers 16
    t3=$(now)
    local copied released rewritten gets puts secs_c secs_r
    copied=$(jq .repack_bytes_copied "$RES/repack.json")
    released=$(jq .repack_bytes_released "$RES/repack.json")
    rewritten=$(jq .repack_records_rewritten "$RES/repack.json")
    gets=$(jq .requests.gets "$RES/repack.json")
    puts=$(jq .requests.puts "$RES/repack.json")
    secs_c=$(secs "$t0" "$t1")
    secs_r=$(secs "$t2" "$t3")
    {
        echo "## 1b. Repacking: $(jq -r .keys "$RES/repack.json") of $KEYS keys left in the packs of one push --all"
        echo
        echo "| command | seconds | ratio |"
        echo "| --- | --- | --- |"
        echo "| \`cairn remote gc gcb --grace 1s\` ($packs packs repacked, $rewritten records re-pointed) | $secs_c | $(ratio "$secs_c" "$secs_r") |"
        echo "| rclone: the same packs and the remaining records down, then up again (8 transfers) | $secs_r | 1 |"
        echo
        echo "Copied $copied live bytes of $released; requests of the gc: $gets GET, $puts PUT. One run each (the gc changes the remote). Load $l0 → $(load)."
        echo
    } >>"$SUMMARY"
    [[ $KEEP == 1 ]] || rm -rf "$moved"
}

# ---------------------------------------------------------------------------------------------
# 2. Local eviction down to 90 % of max-size
# ---------------------------------------------------------------------------------------------
part2() {
    local store=$BENCH_DIR/store-big src=$BENCH_DIR/big-src cfg=$BENCH_DIR/cap.toml
    local restored=$BENCH_DIR/evicted-as-folders
    rm -rf "$store" "$src" "$restored"
    log "2. putting $BIG_KEYS keys of 100 MiB (96 MiB file + 100 files of 40 KiB)"
    local i
    for ((i = 0; i < BIG_KEYS; i++)); do
        rm -rf "$src"
        mkdir -p "$src/small"
        head -c $((96 << 20)) /dev/urandom >"$src/big.bin"
        python3 - "$src/small" <<'EOF'
import os, sys
for f in range(100):
    with open(os.path.join(sys.argv[1], f"s{f:03}"), "wb") as fh:
        fh.write(os.urandom(40 << 10))
EOF
        # One hour apart: least recently used is the oldest.
        faketime -f "+${i}h" "$CAIRN" --quiet --store "$store" put "big/k$(printf %03d "$i")" "$src"
    done
    rm -rf "$src"
    local cap=$(((BIG_KEYS - 5) * 100 << 20)) # 100 keys' worth: 90 % of it holds 90 keys
    printf 'max-size = %d\n' "$cap" >"$cfg"
    local would
    would=$(faketime -f "+${BIG_KEYS}h" "$CAIRN" --store "$store" --config "$cfg" --json gc --policy --dry-run |
        jq -r '.removed[].key')
    log "2. restoring the $(wc -w <<<"$would") keys eviction will remove (the peer deletes them)"
    mkdir -p "$restored"
    local k
    for k in $would; do
        "$CAIRN" --quiet --store "$store" get "$k" "$restored/${k//\//_}"
    done
    sync
    sleep 5
    log "2. evicting (gc --policy with max-size $cap), then rm -rf of the restored folders"
    local l0 t0 t1 t2 t3
    l0=$(load)
    t0=$(now)
    faketime -f "+${BIG_KEYS}h" "$CAIRN" --store "$store" --config "$cfg" --json gc --policy >"$RES/evict.json"
    sync
    t1=$(now)
    t2=$(now)
    rm -rf "$restored"
    sync
    t3=$(now)
    local n freed
    n=$(jq '.removed | length' "$RES/evict.json")
    freed=$(jq .bytes_freed "$RES/evict.json")
    {
        echo "## 2. Local eviction on the real disk"
        echo
        echo "$BIG_KEYS keys of 100 MiB (a 96 MiB file and 100 files of 40 KiB, random) in one store; max-size $cap bytes; \`gc --policy\` evicts down to 90 % of it."
        echo
        echo "| command (each followed by sync) | seconds | ratio |"
        echo "| --- | --- | --- |"
        echo "| \`cairn gc --policy\`: $n keys evicted, $(awk -v b="$freed" 'BEGIN {printf "%.2f GiB", b / 2^30}') freed | $(secs "$t0" "$t1") | $(ratio "$(secs "$t0" "$t1")" "$(secs "$t2" "$t3")") |"
        echo "| \`rm -rf\` of the same keys restored as folders | $(secs "$t2" "$t3") | 1 |"
        echo
        echo "One run each (destructive). Load $l0 → $(load)."
        echo
    } >>"$SUMMARY"
    [[ $KEEP == 1 ]] || rm -rf "$store"
}

# ---------------------------------------------------------------------------------------------
# 3. What recording the last use costs a get
# ---------------------------------------------------------------------------------------------
part3() {
    local tree=${TREE:-$BENCH_DIR/tree}
    if [[ -z ${TREE:-} && ! -d $tree ]]; then
        log "3. copying the toolchain's lib folder and /usr/share into $tree (store.sh's tree)"
        mkdir -p "$tree"
        cp -a "$(rustc --print sysroot)/lib" "$tree/lib"
        cp -a /usr/share "$tree/share"
        find "$tree" -type s -delete
    fi
    local store=$BENCH_DIR/store-get work=$BENCH_DIR/get-work trash=$BENCH_DIR/get-trash
    rm -rf "$store" "$work" "$trash"
    mkdir -p "$work" "$trash" "$work/tiny-src"
    echo tiny >"$work/tiny-src/f"
    log "3. putting $tree"
    "$CAIRN" --quiet --store "$store" put life/tree "$tree" >/dev/null
    "$CAIRN" --quiet --store "$store" put life/tiny "$work/tiny-src" >/dev/null
    "$CAIRN" --quiet --store "$store" get life/tree "$work/warm"
    mv "$work/warm" "$trash/"
    sync
    # One get of KEY at clock offset OFFSET into DEST; prints its seconds (after a sync).
    timed_get() {
        local t0 t1
        sync
        t0=$(now)
        faketime -f "$2" "$CAIRN" --quiet --store "$store" get "$1" "$3"
        t1=$(now)
        secs9 "$t0" "$t1"
    }
    secs9() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.6f", b - a}'; }
    used() { "$CAIRN" --store "$store" --json show "$1" | jq .last_used; }
    med() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
    geo() { printf '%s\n' "$@" | awk '{s += log($1); n++} END {printf "%.3f", exp(s / n)}'; }
    # PAIRS pairs of gets of KEY: A records the use (its clock 2 h past the last recorded one),
    # B does not (its clock within the hour of the last recorded use). Odd pairs run A first,
    # even pairs B first, so neither side always follows the other (the first get of a pair
    # is slower on this disk: it follows the previous pair's writes). Outputs go to the trash,
    # never deleted while timing. Sets A_TIMES, B_TIMES, RATIOS.
    pairs() {
        local key=$1 n=$2 i ta tb u0 u1 u2 a_off b_off
        A_TIMES=() B_TIMES=() RATIOS=()
        for ((i = 1; i <= n; i++)); do
            a_off="+$((2 * i + BASE_H))h"
            if ((i % 2)); then
                b_off=$a_off
                u0=$(used "$key")
                ta=$(timed_get "$key" "$a_off" "$work/a")
                u1=$(used "$key")
                tb=$(timed_get "$key" "$b_off" "$work/b")
                u2=$(used "$key")
                [[ $u1 != "$u0" && $u2 == "$u1" ]] ||
                    die "$key pair $i: A should record the use and B not ($u0 $u1 $u2)"
            else
                b_off="+$(((2 * i - 2 + BASE_H) * 60 + 30))m"
                u0=$(used "$key")
                tb=$(timed_get "$key" "$b_off" "$work/b")
                u1=$(used "$key")
                ta=$(timed_get "$key" "$a_off" "$work/a")
                u2=$(used "$key")
                [[ $u1 == "$u0" && $u2 != "$u1" ]] ||
                    die "$key pair $i: B should not record the use and A should ($u0 $u1 $u2)"
            fi
            A_TIMES+=("$ta")
            B_TIMES+=("$tb")
            RATIOS+=("$(awk -v a="$ta" -v b="$tb" 'BEGIN {printf "%.3f", a / b}')")
            mv "$work/a" "$trash/a$BASE_H-$i"
            mv "$work/b" "$trash/b$BASE_H-$i"
        done
    }
    local l0
    l0=$(load)
    log "3. $TINY_PAIRS pairs of gets of a one-file key"
    BASE_H=0
    pairs life/tiny "$TINY_PAIRS"
    local tiny_a tiny_b tiny_geo tiny_diff d=() k
    tiny_a=$(med "${A_TIMES[@]}")
    tiny_b=$(med "${B_TIMES[@]}")
    tiny_geo=$(geo "${RATIOS[@]}")
    for k in "${!A_TIMES[@]}"; do
        d+=("$(awk -v a="${A_TIMES[$k]}" -v b="${B_TIMES[$k]}" 'BEGIN {printf "%.6f", a - b}')")
    done
    tiny_diff=$(med "${d[@]}")
    ms() { awk -v a="$1" 'BEGIN {printf "%.1f ms", a * 1000}'; }
    log "3. $PAIRS pairs of gets of the tree"
    BASE_H=1000
    pairs life/tree "$PAIRS"
    local files bytes
    read -r files bytes < <(find "$tree" -type f -printf '%s\n' | awk '{n++; s+=$1} END {printf "%d %.0f\n", n, s}')
    {
        echo "## 3. Recording the last use on \`get\`: a one-file key, and a $(awk -v b="$bytes" 'BEGIN {printf "%.2f GB", b / 1e9}') tree ($files files), real disk"
        echo
        echo "| key | pairs | get that records (median) | get that does not (median) | A / B, geometric mean of pair ratios |"
        echo "| --- | --- | --- | --- | --- |"
        echo "| one file | $TINY_PAIRS | $(ms "$tiny_a") | $(ms "$tiny_b") | $tiny_geo |"
        echo "| the tree | $PAIRS | $(fmt "$(med "${A_TIMES[@]}")") s | $(fmt "$(med "${B_TIMES[@]}")") s | $(geo "${RATIOS[@]}") |"
        echo
        echo "One-file key: median of the pair differences (records − does not) $(ms "$tiny_diff"). Tree pair ratios (odd pairs A first): ${RATIOS[*]}. Load $l0 → $(load)."
        echo
    } >>"$SUMMARY"
    rm -rf "$trash"
    [[ $KEEP == 1 ]] || rm -rf "$store" "$work"
}

for p in $ONLY; do
    "part$p"
done
cat "$SUMMARY"
