#!/usr/bin/env bash
# OCI image benchmark (issues 3 and 11, "Speed"): cairn oci extract / import against umoci
# unpack and skopeo copy, on a 1-layer and a 5-layer gzip image built with umoci from a
# debootstrap (minbase, bookworm) Debian root filesystem; peak RSS of import and extract; the
# space the layer cache takes in the store; and a path-by-path check that cairn's extraction
# equals umoci's. Targets (issue 11, diff_id checking included): first extract <= 0.35x of umoci
# unpack, second <= 0.1x, import <= 0.4x of skopeo copy oci-archive: oci:.
#
# Usage: bash benches/oci.sh            (see benches/README.md; needs root, for debootstrap and
#                                         so that both extractors apply owners)
#
# Environment:
#   CAIRN=path          cairn binary to test (default: build it with cargo --release into
#                       ${CARGO_TARGET_DIR:-target})
#   CAIRN_REV=text      what to call that binary in the results (e.g. "commit abc1234")
#   CAIRN_BASE=path     a second cairn binary (e.g. one without diff_id checking) timed in the
#                       same hyperfine runs as CAIRN for the first extraction and the import,
#                       to state what a change costs; CAIRN_BASE_REV names it
#   BENCH_DIR=dir       work folder (default /tmp/cairn-oci-bench); everything goes in here
#   RUNS=n WARMUP=n     hyperfine runs per command (default 5) and warmup runs (default 1)
#   SUITE=bookworm      Debian suite for debootstrap; MIRROR=url its mirror
#   IMAGES="one five"   which images to measure
#   FRESH=1             rebuild the root filesystem and the images even if cached
#   KEEP=1              keep stores, extractions and layouts at the end (the rootfs cache and the
#                       images are always kept; delete BENCH_DIR to drop them)
#   SETTLE=s            seconds to wait after deleting many files (default 65; see store.sh)
#
# The root filesystem is cached in $BENCH_DIR/rootfs and the images in $BENCH_DIR/images
# between runs. All runs are warm-cache. Results go to $BENCH_DIR/results/.
set -euo pipefail

BENCH_DIR=${BENCH_DIR:-/tmp/cairn-oci-bench}
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
IMAGES=${IMAGES:-"one five"}
FRESH=${FRESH:-0}
KEEP=${KEEP:-0}
SETTLE=${SETTLE:-65}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOTFS=$BENCH_DIR/rootfs
IMG=$BENCH_DIR/images
RUN=$BENCH_DIR/run
TRASH=$BENCH_DIR/trash
RES=$BENCH_DIR/results
BIN=$BENCH_DIR/bin

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'oci.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
install_tools() {
    ((EUID == 0)) || die "run as root (debootstrap, and both extractors apply owners only as root)"
    local missing=()
    for t in hyperfine umoci skopeo debootstrap jq; do command -v "$t" >/dev/null || missing+=("$t"); done
    [[ -x /usr/bin/time ]] || missing+=(time)
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    for t in hyperfine umoci skopeo debootstrap jq; do command -v "$t" >/dev/null || die "$t is still missing"; done
    [[ -x /usr/bin/time ]] || die "/usr/bin/time is still missing"
}

build_cairn() {
    if [[ -n ${CAIRN:-} ]]; then
        [[ -x $CAIRN ]] || die "CAIRN=$CAIRN is not executable"
        CAIRN=$(realpath "$CAIRN")
        CAIRN_REV=${CAIRN_REV:-"commit unknown (binary given with CAIRN=)"}
        return
    fi
    CAIRN_REV="commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    git -C "$REPO" diff --quiet HEAD -- store oci cli Cargo.toml Cargo.lock 2>/dev/null ||
        CAIRN_REV+=" + uncommitted changes"
    local target=${CARGO_TARGET_DIR:-$REPO/target}
    log "building cairn (release) into $target"
    (cd "$REPO" && CARGO_TARGET_DIR=$target cargo build --release -q -p cairn)
    CAIRN=$target/release/cairn
}

# ---------------------------------------------------------------------------------------------
# The root filesystem and the images
# ---------------------------------------------------------------------------------------------
make_rootfs() {
    if [[ $FRESH != 1 && -f $BENCH_DIR/rootfs.ready ]]; then
        log "reusing $ROOTFS (FRESH=1 rebuilds it)"
        return
    fi
    rm -rf "$ROOTFS" "$ROOTFS.tmp" "$BENCH_DIR/rootfs.ready" "$IMG"
    log "debootstrap --variant=minbase $SUITE into $ROOTFS"
    debootstrap --variant=minbase "$SUITE" "$ROOTFS.tmp" "$MIRROR" >"$BENCH_DIR/debootstrap.log" 2>&1 ||
        die "debootstrap failed, see $BENCH_DIR/debootstrap.log"
    # Leftovers of the bootstrap that a real image would not carry.
    rm -rf "$ROOTFS.tmp"/var/cache/apt/archives/*.deb "$ROOTFS.tmp"/var/lib/apt/lists/*_Packages
    mv "$ROOTFS.tmp" "$ROOTFS"
    touch "$BENCH_DIR/rootfs.ready"
}

# Repacks bundle $2 of layout $1 (tag $3) into a new layer on top of the image.
repack() { umoci repack --refresh-bundle --no-history --image "$1:$3" "$2"; }

# Changes for the 5-layer image's top layer: deletions (whiteouts), edits, a folder replaced by
# a file, a file replaced by a folder, a setuid file, a symlink, and a hardlink to a file of a
# lower layer.
mutate() {
    local r=$1
    rm -rf "$r/usr/share/locale" "$r/usr/share/zoneinfo/right" "$r/var/lib/apt/lists"
    find "$r/usr/share/doc" -mindepth 1 -maxdepth 1 -name 'lib*' -exec rm -rf {} +
    rm -f "$r/usr/bin/perl5"* "$r/etc/motd"
    printf 'bench:x:1000:1000::/home/bench:/bin/sh\n' >>"$r/etc/passwd"
    printf 'cairn bench\n' >"$r/etc/hostname"
    rm -rf "$r/opt" && printf 'a file where a folder was\n' >"$r/opt"
    rm -f "$r/etc/debian_version" && mkdir -p "$r/etc/debian_version" && echo 12 >"$r/etc/debian_version/v"
    mkdir -p "$r/usr/local/bin"
    printf '#!/bin/sh\necho hi\n' >"$r/usr/local/bin/suid" && chmod 4755 "$r/usr/local/bin/suid"
    ln -s ../../bin/dpkg "$r/usr/local/bin/dpkg-link"
    ln "$r/usr/bin/dpkg" "$r/usr/local/bin/dpkg-hardlink"
    chown 1000:1000 "$r/usr/local/bin/suid"
}

make_images() {
    if [[ $FRESH != 1 && -f $IMG/ready ]]; then
        log "reusing the images in $IMG"
        return
    fi
    rm -rf "$IMG"
    mkdir -p "$IMG"
    local b=$IMG/bundle
    log "1-layer image: the whole root filesystem"
    umoci init --layout "$IMG/one"
    umoci new --image "$IMG/one:one"
    umoci unpack --image "$IMG/one:one" "$b"
    cp -a "$ROOTFS/." "$b/rootfs/"
    repack "$IMG/one" "$b" one
    umoci gc --layout "$IMG/one"
    rm -rf "$b"

    log "5-layer image: /usr, /var, /etc, the rest, then deletions and edits"
    umoci init --layout "$IMG/five"
    umoci new --image "$IMG/five:five"
    umoci unpack --image "$IMG/five:five" "$b"
    local top
    for part in usr var etc; do
        cp -a "$ROOTFS/$part" "$b/rootfs/"
        repack "$IMG/five" "$b" five
    done
    for top in "$ROOTFS"/* "$ROOTFS"/.[!.]*; do
        [[ -e $top || -L $top ]] || continue
        case $(basename "$top") in usr | var | etc) continue ;; esac
        cp -a "$top" "$b/rootfs/"
    done
    repack "$IMG/five" "$b" five
    mutate "$b/rootfs"
    repack "$IMG/five" "$b" five
    umoci gc --layout "$IMG/five"
    rm -rf "$b"

    # OCI archives: the layout as a tar, as buildx's type=oci writes it.
    local i
    for i in one five; do tar -C "$IMG/$i" -cf "$IMG/$i.tar" oci-layout index.json blobs; done
    touch "$IMG/ready"
}

# Prints a one-line description of image $1: layers, compressed size, paths.
describe() {
    local i=$1 m layers bytes
    m=$(jq -r '.manifests[0].digest' "$IMG/$i/index.json" | sed 's/:/\//')
    layers=$(jq '.layers | length' "$IMG/$i/blobs/$m")
    bytes=$(jq '[.layers[].size] | add' "$IMG/$i/blobs/$m")
    printf '%s layer(s), %s bytes of gzip layers (%d MB), archive %d MB' "$layers" "$bytes" \
        $((bytes / 1000000)) $(($(stat -c %s "$IMG/$i.tar") / 1000000))
}

# ---------------------------------------------------------------------------------------------
# Helpers for hyperfine's --prepare (sh), and measuring
# ---------------------------------------------------------------------------------------------
write_helpers() {
    mkdir -p "$BIN" "$RES" "$TRASH" "$RUN"
    # Moves its arguments into the trash instead of deleting them (see store.sh, purge_trash).
    cat >"$BIN/aside.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
mkdir -p "$TRASH"
for p in "\$@"; do
    [[ ! -e \$p ]] || mv "\$p" "$TRASH/\$(basename "\$p").\$(date +%s%N)"
done
EOF
    # A store holding only the imported image: the layer cache is empty.
    cat >"$BIN/fresh-store.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
bash "$BIN/aside.sh" "\$2" "\$3"
cp -a "\$1" "\$2"
EOF
    chmod +x "$BIN"/*.sh
}

purge_trash() {
    [[ -d $TRASH && -n $(ls -A "$TRASH") ]] || return 0
    log "emptying the trash, then waiting ${SETTLE}s for the deleted inodes to age"
    rm -rf "$TRASH"
    mkdir -p "$TRASH"
    sync
    sleep "$SETTLE"
}

median() { jq -r ".results[$2].median" "$1"; }
stddev() { jq -r ".results[$2].stddev" "$1"; }
minimum() { jq -r ".results[$2].min" "$1"; }
min_ratio() { ratio "$(minimum "$1" 0)" "$(minimum "$1" 1)"; }
load() { cut -d' ' -f1 /proc/loadavg; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
fmt() { awk -v a="$1" 'BEGIN {printf "%.3f", a}'; }
met_le() { awk -v r="$1" -v t="$2" 'BEGIN {print (r <= t) ? "yes" : "no"}'; }

SUMMARY=$RES/summary.md
hf() { hyperfine --style basic --warmup "$WARMUP" --runs "$RUNS" "$@"; }

# Appends a table row for hyperfine export $1 (cairn first, peer second).
row() {
    local what=$1 json=$2 peer=$3 target=$4 l0=$5 a b sa sb r
    a=$(median "$json" 0) b=$(median "$json" 1) sa=$(stddev "$json" 0) sb=$(stddev "$json" 1)
    r=$(ratio "$a" "$b")
    printf '| %s | %s (σ %s) | %s: %s (σ %s) | %sx | ≤ %sx | %s | %sx | %s / %s |\n' "$what" \
        "$(fmt "$a")" "$(fmt "$sa")" "$peer" "$(fmt "$b")" "$(fmt "$sb")" "$r" "$target" \
        "$(met_le "$r" "$target")" "$(min_ratio "$json")" "$l0" "$(load)" >>"$SUMMARY"
}

# With CAIRN_BASE: appends a row for hyperfine export $2's first command (CAIRN) against its
# third (CAIRN_BASE): what the change between the two binaries costs.
base_row() {
    [[ -n ${CAIRN_BASE:-} ]] || return 0
    local what=$1 json=$2 a c
    a=$(median "$json" 0) c=$(median "$json" 2)
    printf '| %s: cairn vs base (%s) | %s (σ %s) | base: %s (σ %s) | %sx | | | | |\n' "$what" \
        "${CAIRN_BASE_REV:-$CAIRN_BASE}" "$(fmt "$a")" "$(fmt "$(stddev "$json" 0)")" "$(fmt "$c")" \
        "$(fmt "$(stddev "$json" 2)")" "$(ratio "$a" "$c")" >>"$SUMMARY"
}

# Runs "$@" under /usr/bin/time -v and samples RssAnon/RssFile every 50 ms.
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

RSS_ROWS=$RES/rss.md
rss_row() {
    local what=$1 max anon file secs mb
    read -r max anon file secs <<<"$2"
    mb=$((max / 1024))
    printf '| %s | %d MB | %d MB | %d MB | %s s | < 200 MB | %s |\n' "$what" "$mb" $((anon / 1024)) \
        $((file / 1024)) "$secs" "$( ((mb < 200)) && echo yes || echo no)" >>"$RSS_ROWS"
}

SPACE_ROWS=$RES/space.md
du_b() { du -sb "$1" | cut -f1; }
du_k() { du -sk "$1" | cut -f1; }

# ---------------------------------------------------------------------------------------------
# Correctness: cairn's extraction equals umoci's rootfs, path by path
# ---------------------------------------------------------------------------------------------
# Type, mode, owner, link count (not for folders), size (files), link target, path; then the
# sha256 of every regular file.
listing() {
    (cd "$1" && find . -mindepth 1 -printf '%y %m %U:%G %n %s %l %P\n' |
        awk '$1 == "d" {$4 = "-"; $5 = "-"} $1 == "l" {$5 = "-"} {print}' | LC_ALL=C sort)
    (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
}

check_same() {
    local i=$1 dest=$2 bundle=$3
    listing "$dest" >"$RES/ls-cairn-$i.txt"
    listing "$bundle/rootfs" >"$RES/ls-umoci-$i.txt"
    if ! cmp -s "$RES/ls-cairn-$i.txt" "$RES/ls-umoci-$i.txt"; then
        diff "$RES/ls-umoci-$i.txt" "$RES/ls-cairn-$i.txt" | head -n 40 >&2
        die "image $i: cairn oci extract differs from umoci unpack (< umoci, > cairn; full listings in $RES/ls-*-$i.txt)"
    fi
    # mtimes: reported, not fatal (umoci and cairn may differ on folders they create implicitly).
    local mt
    mt=$(diff <(cd "$dest" && find . -mindepth 1 ! -type l -printf '%T@ %P\n' | LC_ALL=C sort -k2) \
        <(cd "$bundle/rootfs" && find . -mindepth 1 ! -type l -printf '%T@ %P\n' | LC_ALL=C sort -k2) |
        grep -c '^<' || true)
    local paths
    paths=$(wc -l <"$RES/ls-cairn-$i.txt")
    echo "image $i: cairn's extraction equals umoci's rootfs: $(find "$dest" -mindepth 1 | wc -l) paths (type, mode, owner, link count, size, target, sha256); $mt paths with a different mtime" |
        tee -a "$RES/notes.txt" >&2
    : "$paths"
}

# ---------------------------------------------------------------------------------------------
# The comparisons, per image
# ---------------------------------------------------------------------------------------------
bench_image() {
    local i=$1 key=bench/$1 layout=$IMG/$1 archive=$IMG/$1.tar
    local pristine=$RUN/$i-pristine warm=$RUN/$i-warm
    local store=$RUN/store dest=$RUN/dest bundle=$RUN/bundle skdir=$RUN/skopeo
    local l0

    log "image $i: $(describe "$i")"
    rm -rf "$pristine" "$warm"
    "$CAIRN" --store "$pristine" -q oci import "$archive" --name "$key" >/dev/null
    local s_import s_extract
    s_import=$(du_k "$pristine")

    # A store whose layer cache is warm, and the correctness check on its first extraction.
    cp -a "$pristine" "$warm"
    bash "$BIN/aside.sh" "$dest" "$bundle"
    "$CAIRN" --store "$warm" -q oci extract "$key" "$dest" >/dev/null
    umoci unpack --image "$layout:$i" "$bundle" >/dev/null
    check_same "$i" "$dest" "$bundle"
    s_extract=$(du_k "$warm")
    printf '| %s | %d MB | %d MB | %d MB | %d MB |\n' "$i" $(($(stat -c %s "$archive") / 1000000)) \
        $((s_import / 1024)) $((s_extract / 1024)) $(((s_extract - s_import) / 1024)) >>"$SPACE_ROWS"
    bash "$BIN/aside.sh" "$dest" "$bundle"

    # With CAIRN_BASE, the base binary is the third command of the first-extraction and import
    # runs, on stores of its own (imported by itself: it may use another store layout).
    local base_extract=() base_import=()
    if [[ -n ${CAIRN_BASE:-} ]]; then
        rm -rf "$pristine.base"
        "$CAIRN_BASE" --store "$pristine.base" -q oci import "$archive" --name "$key" >/dev/null
        base_extract=(--prepare "bash '$BIN/fresh-store.sh' '$pristine.base' '$store.base' '$dest.base'"
            -n "base oci extract (first)" "'$CAIRN_BASE' --store '$store.base' -q oci extract $key '$dest.base'")
        base_import=(--prepare "bash '$BIN/aside.sh' '$store.base'"
            -n "base oci import" "'$CAIRN_BASE' --store '$store.base' -q oci import '$archive' --name $key")
    fi

    l0=$(load)
    log "image $i: first extraction (empty layer cache) vs umoci unpack"
    hf --export-json "$RES/extract1-$i.json" \
        --prepare "bash '$BIN/fresh-store.sh' '$pristine' '$store' '$dest'" \
        -n "cairn oci extract (first)" "'$CAIRN' --store '$store' -q oci extract $key '$dest'" \
        --prepare "bash '$BIN/aside.sh' '$bundle'" \
        -n "umoci unpack" "umoci unpack --image '$layout:$i' '$bundle'" \
        "${base_extract[@]}"
    row "$i: first extract vs umoci unpack" "$RES/extract1-$i.json" "umoci" 0.35 "$l0"
    base_row "$i: first extract" "$RES/extract1-$i.json"
    bash "$BIN/aside.sh" "$store" "$dest" "$bundle" "$store.base" "$dest.base"
    purge_trash

    l0=$(load)
    log "image $i: second extraction (warm layer cache) vs umoci unpack"
    hf --export-json "$RES/extract2-$i.json" \
        --prepare "bash '$BIN/aside.sh' '$dest'" \
        -n "cairn oci extract (second)" "'$CAIRN' --store '$warm' -q oci extract $key '$dest'" \
        --prepare "bash '$BIN/aside.sh' '$bundle'" \
        -n "umoci unpack" "umoci unpack --image '$layout:$i' '$bundle'"
    row "$i: second extract vs umoci unpack" "$RES/extract2-$i.json" "umoci" 0.1 "$l0"
    bash "$BIN/aside.sh" "$dest" "$bundle"
    purge_trash

    l0=$(load)
    log "image $i: import of the OCI archive vs skopeo copy"
    hf --export-json "$RES/import-$i.json" \
        --prepare "bash '$BIN/aside.sh' '$store'" \
        -n "cairn oci import" "'$CAIRN' --store '$store' -q oci import '$archive' --name $key" \
        --prepare "bash '$BIN/aside.sh' '$skdir'" \
        -n "skopeo copy" "skopeo copy -q 'oci-archive:$archive' 'oci:$skdir:$i'" \
        "${base_import[@]}"
    row "$i: import vs skopeo copy" "$RES/import-$i.json" "skopeo" 0.4 "$l0"
    base_row "$i: import" "$RES/import-$i.json"
    bash "$BIN/aside.sh" "$store" "$skdir" "$store.base"

    log "image $i: peak RSS"
    local m
    m=$(measure_rss "$RES/rss-import-$i" "$CAIRN" --store "$store" -q oci import "$archive" --name "$key")
    rss_row "import, $i" "$m"
    m=$(measure_rss "$RES/rss-extract1-$i" "$CAIRN" --store "$store" -q oci extract "$key" "$dest")
    rss_row "first extract, $i" "$m"
    bash "$BIN/aside.sh" "$dest"
    m=$(measure_rss "$RES/rss-extract2-$i" "$CAIRN" --store "$store" -q oci extract "$key" "$dest")
    rss_row "second extract, $i" "$m"
    bash "$BIN/aside.sh" "$store" "$dest"
    [[ $KEEP == 1 ]] || bash "$BIN/aside.sh" "$pristine" "$pristine.base" "$warm"
    purge_trash
}

machine_info() {
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
        echo "cpu: $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
        echo "memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
        echo "kernel: $(uname -r)"
        echo "work dir: $BENCH_DIR on $(findmnt -no FSTYPE -T "$BENCH_DIR") ($(findmnt -no SOURCE -T "$BENCH_DIR"))"
        echo "cairn: $("$CAIRN" --version), $CAIRN_REV"
        echo "hyperfine: $(hyperfine --version); $(umoci --version); $(skopeo --version)"
        echo "rootfs: debootstrap --variant=minbase $SUITE: $(find "$ROOTFS" -mindepth 1 | wc -l) paths, $(find "$ROOTFS" -type f | wc -l) files, $(du -sm --apparent-size "$ROOTFS" | cut -f1) MB"
        local i
        for i in $IMAGES; do echo "image $i: $(describe "$i")"; done
    } | tee "$RES/machine.txt" >&2
}

main() {
    install_tools
    build_cairn
    mkdir -p "$BENCH_DIR"
    make_rootfs
    make_images
    write_helpers
    rm -f "$RES"/*.json "$RES"/*.md "$RES/notes.txt" "$RES"/rss-*
    purge_trash
    machine_info
    {
        echo
        echo "| comparison | cairn median (s) | peer median (s) | ratio | target | met? | ratio of fastest runs | load before/after |"
        echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    } >"$SUMMARY"
    {
        echo "| run | max RSS (time -v) | peak RssAnon | peak RssFile | wall | target | met? |"
        echo "| --- | --- | --- | --- | --- | --- | --- |"
    } >"$RSS_ROWS"
    {
        echo "| image | archive | store after import | after first extract | layer cache |"
        echo "| --- | --- | --- | --- | --- |"
    } >"$SPACE_ROWS"
    local i
    for i in $IMAGES; do bench_image "$i"; done
    echo >>"$SUMMARY"
    cat "$RSS_ROWS" >>"$SUMMARY"
    echo >>"$SUMMARY"
    cat "$SPACE_ROWS" >>"$SUMMARY"
    sed -i "1i # cairn OCI benchmark ($(date -u +%Y-%m-%d), warm cache, hyperfine medians of $RUNS runs after $WARMUP warmup)" "$SUMMARY"
    if [[ $KEEP != 1 ]]; then rm -rf "$RUN" "$TRASH"; fi
    log "results ($RES)"
    cat "$RES/machine.txt" "$SUMMARY"
    [[ ! -f $RES/notes.txt ]] || cat "$RES/notes.txt"
}

main "$@"
