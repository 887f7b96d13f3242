#!/usr/bin/env bash
# Linked restores benchmark (issue 14): `cairn get --link` and `cairn oci extract --link`
# against their peers, on the real disk (refused on tmpfs), each ratio from one hyperfine run:
#
#   1. repeat `get --link` (checkout objects present) vs `cp -al` of the same tree   target <= 2x
#   2. first `get --link` (no checkout objects)       vs today's `get` (a copy)      target <= 1.0x
#   3. repeat `oci extract --link` of a Debian image  vs `umoci unpack`              target <= 0.15x
#      (plain repeat `oci extract` timed in the same run, for reference)
#
# Usage: bash benches/link.sh            (needs root: debootstrap, and umoci applies owners
#                                          only as root, as cairn does)
#
# Environment:
#   CAIRN=path          cairn binary to test (default: build it with cargo --release)
#   CAIRN_REV=text      what to call that binary in the results
#   BENCH_DIR=dir       work folder (default /tmp/cairn-link-bench); must not be on tmpfs
#   RUNS=n WARMUP=n     hyperfine runs per command (default 3) and warmup runs (default 1)
#   SOURCES="d1 d2"     folders copied into the tree (default: "$(rustc --print sysroot)/lib
#                       /usr/share", as benches/store.sh)
#   SUITE, MIRROR       Debian suite and mirror for debootstrap (default bookworm, deb.debian.org)
#   PARTS="1 2 3"       which parts to run
#   SETTLE=s            seconds to wait after emptying the trash (default 65; see below)
#
# Disk state (benchmarks.md, F0): ext4 here creates files slowly right after tens of thousands
# were deleted, so no timed run follows a mass deletion: each --prepare moves the previous
# output into a trash folder (a rename), emptied only at the start (then SETTLE seconds of
# waiting) and at the end. The same holds for both sides of each comparison. `gc --checkouts`
# before a "first --link" run deletes objects whose inodes the trashed restores still link,
# so it frees no inode either. All runs are warm-cache.
set -euo pipefail

BENCH_DIR=${BENCH_DIR:-/tmp/cairn-link-bench}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PARTS=${PARTS:-"1 2 3"}
SETTLE=${SETTLE:-65}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TREE=$BENCH_DIR/tree
STORE=$BENCH_DIR/store
ROOTFS=$BENCH_DIR/rootfs
IMG=$BENCH_DIR/image
TRASH=$BENCH_DIR/trash
DEST=$BENCH_DIR/dest
RES=$BENCH_DIR/results
BIN=$BENCH_DIR/bin
KEY=bench/tree

SCRIPT=link.sh
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

install_tools() {
    ((EUID == 0)) || die "run as root (debootstrap; owners applied by umoci and cairn alike)"
    need_tools hyperfine jq umoci debootstrap
    check_tools hyperfine jq umoci debootstrap
}

check_disk() {
    mkdir -p "$BENCH_DIR"
    local fstype src
    fstype=$(findmnt -no FSTYPE -T "$BENCH_DIR")
    src=$(findmnt -no SOURCE -T "$BENCH_DIR")
    [[ $fstype != tmpfs && $fstype != ramfs ]] || die "$BENCH_DIR is on $fstype; use a real disk"
    DISK="$src ($fstype), $(df -h --output=size "$BENCH_DIR" | tail -1 | tr -d ' ') "
    log "benchmarking on $DISK"
}

make_tree() {
    if [[ -f $BENCH_DIR/tree.ready ]]; then
        log "reusing $TREE"
        return
    fi
    rm -rf "$TREE"
    mkdir -p "$TREE"
    local src
    for src in ${SOURCES:-$(rustc --print sysroot)/lib /usr/share}; do
        log "copying $src into $TREE/$(basename "$src")"
        cp -a "$src" "$TREE/$(basename "$src")"
    done
    find "$TREE" -type s -delete
    sync
    touch "$BENCH_DIR/tree.ready"
}

make_image() {
    if [[ ! -f $BENCH_DIR/rootfs.ready ]]; then
        rm -rf "$ROOTFS" "$ROOTFS.tmp"
        log "debootstrap --variant=minbase $SUITE into $ROOTFS"
        debootstrap --variant=minbase "$SUITE" "$ROOTFS.tmp" "$MIRROR" >"$BENCH_DIR/debootstrap.log" 2>&1 ||
            die "debootstrap failed, see $BENCH_DIR/debootstrap.log"
        rm -rf "$ROOTFS.tmp"/var/cache/apt/archives/*.deb "$ROOTFS.tmp"/var/lib/apt/lists/*_Packages
        mv "$ROOTFS.tmp" "$ROOTFS"
        touch "$BENCH_DIR/rootfs.ready"
    fi
    [[ -f $BENCH_DIR/image.ready ]] && return
    rm -rf "$IMG"
    log "1-layer gzip image of the root filesystem (umoci)"
    umoci init --layout "$IMG"
    umoci new --image "$IMG:deb"
    umoci unpack --image "$IMG:deb" "$BENCH_DIR/bundle"
    cp -a "$ROOTFS/." "$BENCH_DIR/bundle/rootfs/"
    umoci repack --refresh-bundle --no-history --image "$IMG:deb" "$BENCH_DIR/bundle"
    umoci gc --layout "$IMG"
    rm -rf "$BENCH_DIR/bundle"
    touch "$BENCH_DIR/image.ready"
}

write_helpers() {
    mkdir -p "$BIN" "$RES" "$TRASH"
    # Moves its arguments into the trash (a rename) instead of deleting them.
    cat >"$BIN/aside.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
for p in "\$@"; do
    [[ ! -e \$p ]] || mv "\$p" "$TRASH/\$(basename "\$p").\$(date +%s%N)"
done
sync
EOF
    chmod +x "$BIN/aside.sh"
}

c() { echo "$CAIRN --store $STORE"; }

part1() {
    log "1. repeat get --link vs cp -al"
    $(c) get --link "$KEY" "$DEST" >/dev/null
    "$BIN/aside.sh" "$DEST"
    hf --export-json "$RES/repeat.json" \
        --prepare "$BIN/aside.sh $DEST" -n "cp -al" "cp -al $TREE $DEST" \
        --prepare "$BIN/aside.sh $DEST" -n "cairn get --link (repeat)" "$(c) get --link $KEY $DEST"
    R1=$(ratio "$(median "$RES/repeat.json" 1)" "$(median "$RES/repeat.json" 0)")
}

part2() {
    log "2. first get --link vs get"
    hf --export-json "$RES/first.json" \
        --prepare "$BIN/aside.sh $DEST" -n "cairn get (copy)" "$(c) get $KEY $DEST" \
        --prepare "$BIN/aside.sh $DEST && $(c) gc --checkouts >/dev/null && sync" \
        -n "cairn get --link (first)" "$(c) get --link $KEY $DEST"
    R2=$(ratio "$(median "$RES/first.json" 1)" "$(median "$RES/first.json" 0)")
}

part3() {
    log "3. repeat oci extract --link vs umoci unpack"
    $(c) oci import "$IMG" --name deb >/dev/null
    "$BIN/aside.sh" "$DEST"
    $(c) oci extract --link deb "$DEST" >/dev/null
    "$BIN/aside.sh" "$DEST"
    hf --export-json "$RES/oci.json" \
        --prepare "$BIN/aside.sh $DEST" -n "umoci unpack" "umoci unpack --image $IMG:deb $DEST" \
        --prepare "$BIN/aside.sh $DEST" -n "cairn oci extract --link (repeat)" \
        "$(c) oci extract --link deb $DEST" \
        --prepare "$BIN/aside.sh $DEST" -n "cairn oci extract (repeat, copy)" \
        "$(c) oci extract deb $DEST"
    R3=$(ratio "$(median "$RES/oci.json" 1)" "$(median "$RES/oci.json" 0)")
    R3c=$(ratio "$(median "$RES/oci.json" 2)" "$(median "$RES/oci.json" 0)")
}

summary() {
    local f files=- bytes=-
    [[ ! -d $TREE ]] ||
        read -r files bytes < <(find "$TREE" -type f -printf '%s\n' | awk '{n++; s+=$1} END {printf "%d %.0f\n", n, s}')
    echo "### link.sh: $CAIRN_REV, $(date -u +%Y-%m-%d), RUNS=$RUNS WARMUP=$WARMUP, load $(load)"
    echo
    echo "Disk: $DISK; tree: $files files, $bytes bytes; medians in seconds."
    echo
    echo "| # | cairn | median | peer | median | ratio | target | met |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    f=$RES/repeat.json
    [[ -z ${R1:-} ]] || echo "| 1 | repeat \`get --link\` | $(fmt "$(median $f 1)") | \`cp -al\` | $(fmt "$(median $f 0)") | ${R1}x | ≤ 2x | $(met_le "$R1" 2) |"
    f=$RES/first.json
    [[ -z ${R2:-} ]] || echo "| 2 | first \`get --link\` | $(fmt "$(median $f 1)") | \`get\` | $(fmt "$(median $f 0)") | ${R2}x | ≤ 1.0x | $(met_le "$R2" 1.0) |"
    f=$RES/oci.json
    if [[ -n ${R3:-} ]]; then
        echo "| 3 | repeat \`oci extract --link\` | $(fmt "$(median $f 1)") | \`umoci unpack\` | $(fmt "$(median $f 0)") | ${R3}x | ≤ 0.15x | $(met_le "$R3" 0.15) |"
        echo "| 3' | repeat \`oci extract\` (copy) | $(fmt "$(median $f 2)") | \`umoci unpack\` | $(fmt "$(median $f 0)") | ${R3c}x | | |"
    fi
}

install_tools
check_disk
build_cairn store remote oci cli
write_helpers
"$BIN/aside.sh" "$DEST"
if [[ -n $(ls -A "$TRASH") ]]; then purge_trash; fi
rm -rf "$STORE"
if [[ $PARTS == *1* || $PARTS == *2* ]]; then
    make_tree
    log "cairn put $KEY"
    $(c) put "$KEY" "$TREE" >/dev/null
fi
for p in $PARTS; do
    [[ $p != 3 ]] || make_image
    "part$p"
done
summary | tee "$RES/summary.md"
rm -rf "$TRASH"
