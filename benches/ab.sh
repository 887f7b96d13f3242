#!/usr/bin/env bash
# A/B benchmark: two cairn binaries (A = CAIRN, the change; B = CAIRN_BASE, the baseline) doing
# the same store and remote jobs on the same tree, run in turn A B A B ... so that the ratio
# A/B of each pair sees the same machine state; reports each side's median and the median of
# the per-pair ratios. Use it to show what a change costs (or saves) where a refactoring is
# meant to change nothing.
#
# Usage: CAIRN_BASE=/path/to/old/cairn bash benches/ab.sh
#
# Environment:
#   CAIRN=path          binary A (default: build this checkout with cargo --release)
#   CAIRN_BASE=path     binary B (required)
#   CAIRN_REV / CAIRN_BASE_REV   what to call them in the results
#   BENCH_DIR=dir       work folder (default /tmp/cairn-ab); the tree is copied in once
#   RUNS=n              pairs per job (default 5), after one unmeasured pair (WARMUP=1)
#   SOURCES="d1 d2"     folders copied into the tree (default: the Rust toolchain's lib folder)
#   JOBS="put reput get verify push pull"   which jobs to run
#
# Every job's output goes to a fresh path (old outputs are moved to a trash folder that is
# emptied only at the end: on this machine's ext4, file creation right after mass deletion is
# slow, docs/benchmarks.md F0). Results: $BENCH_DIR/results/ab.md and ab.tsv.
set -euo pipefail

BENCH_DIR=${BENCH_DIR:-/tmp/cairn-ab}
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
JOBS=${JOBS:-"put reput get verify push pull"}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=ab.sh
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

[[ -n ${CAIRN_BASE:-} && -x ${CAIRN_BASE:-} ]] || die "set CAIRN_BASE to the baseline binary"
CAIRN_BASE=$(realpath "$CAIRN_BASE")
CAIRN_BASE_REV=${CAIRN_BASE_REV:-"$CAIRN_BASE"}
need_tools jq
check_tools jq
build_cairn

TREE=$BENCH_DIR/tree
TRASH=$BENCH_DIR/trash
RES=$BENCH_DIR/results
WORK=$BENCH_DIR/work
mkdir -p "$TRASH" "$RES" "$WORK"

if [[ ! -d $TREE ]]; then
    read -r -a sources <<<"${SOURCES:-$(rustc --print sysroot)/lib}"
    log "copying ${sources[*]} into $TREE"
    mkdir -p "$TREE.tmp"
    for s in "${sources[@]}"; do cp -a "$s" "$TREE.tmp/"; done
    mv "$TREE.tmp" "$TREE"
fi
files=$(find "$TREE" -type f | wc -l)
bytes=$(du -sb "$TREE" | cut -f1)

# Per-side state: a store with the tree under key `ab/tree` (for get, verify, push, reput) and a
# file:// remote holding it (for pull).
side_dir() { echo "$WORK/$1"; }
setup_side() { # NAME BIN
    local d
    d=$(side_dir "$1")
    [[ -d $d/store ]] && return 0
    log "seeding side $1"
    mkdir -p "$d"
    "$2" --store "$d/store" put ab/tree "$TREE" >/dev/null
    "$2" --store "$d/store" push "file://$d/remote" ab/tree >/dev/null 2>&1
}

# fresh NAME: a new, unused path under the side's folder (called in a subshell, so it cannot
# count in a variable).
fresh() { mktemp -u -p "$(side_dir "$1")" out.XXXXXXXX; }

# job_cmd JOB NAME BIN: prints the command line (one string, run with bash -c) for one run.
job_cmd() {
    local job=$1 side=$2 bin=$3 d out
    d=$(side_dir "$side")
    out=$(fresh "$side")
    case $job in
    put) echo "$bin --store $out put ab/tree $TREE" ;;
    reput) echo "$bin --store $d/store put ab/tree $TREE" ;;
    get) echo "$bin --store $d/store get ab/tree $out" ;;
    verify) echo "$bin --store $d/store verify ab/tree" ;;
    push) echo "cp -a $d/store $out.store && $bin --store $out.store push file://$out ab/tree" ;;
    pull) echo "$bin --store $out get ab/tree $out.dest --remote file://$d/remote" ;;
    *) die "unknown job $job" ;;
    esac
}

# Time one command line (wall seconds), outputs to /dev/null; a failure stops the benchmark.
clock() {
    local t0 t1
    t0=$(date +%s.%N)
    bash -c "$1" >/dev/null 2>"$RES/last.err" || die "failed: $1 ($(tail -1 "$RES/last.err"))"
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f", b - a}'
}

# The push job copies the store first; that copy is timed too, the same for both sides, so its
# ratio understates the difference: its row says so.
median_of() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

setup_side A "$CAIRN"
setup_side B "$CAIRN_BASE"
printf 'job\tpair\tA_s\tB_s\tratio\tload\n' >"$RES/ab.tsv"
{
    echo "| job | A median (s) | B median (s) | A/B, median of pairs | min-max of pair ratios | load |"
    echo "| --- | --- | --- | --- | --- | --- |"
} >"$RES/ab.md"
for job in $JOBS; do
    log "$job: $WARMUP warmup pair(s), $RUNS pairs"
    as=() bs=() rs=()
    for ((i = 0; i < WARMUP + RUNS; i++)); do
        a=$(clock "$(job_cmd "$job" A "$CAIRN")")
        b=$(clock "$(job_cmd "$job" B "$CAIRN_BASE")")
        ((i < WARMUP)) && continue
        r=$(ratio "$a" "$b")
        as+=("$a") bs+=("$b") rs+=("$r")
        printf '%s\t%d\t%s\t%s\t%s\t%s\n' "$job" "$((i - WARMUP + 1))" "$a" "$b" "$r" "$(load)" >>"$RES/ab.tsv"
    done
    ma=$(printf '%s\n' "${as[@]}" | median_of)
    mb=$(printf '%s\n' "${bs[@]}" | median_of)
    mr=$(printf '%s\n' "${rs[@]}" | median_of)
    lo=$(printf '%s\n' "${rs[@]}" | sort -g | head -1)
    hi=$(printf '%s\n' "${rs[@]}" | sort -g | tail -1)
    printf '| %s | %s | %s | %s | %s-%s | %s |\n' "$job" "$(fmt "$ma")" "$(fmt "$mb")" "$(fmt "$mr")" \
        "$lo" "$hi" "$(load)" >>"$RES/ab.md"
    # Keep the disk from filling: move this job's outputs aside.
    for s in A B; do
        mkdir -p "$TRASH/$job.$s"
        find "$(side_dir $s)" -maxdepth 1 -name 'out.*' -exec mv -t "$TRASH/$job.$s" {} +
    done
done
{
    echo
    echo "A: $CAIRN_REV. B: $CAIRN_BASE_REV. Tree: $files files, $bytes bytes."
    echo "$RUNS pairs after $WARMUP warmup pair(s); each pair runs A then B."
    echo "\`push\` includes a \`cp -a\` of the store on both sides."
} >>"$RES/ab.md"
cat "$RES/ab.md"
log "emptying the trash"
rm -rf "$TRASH"
