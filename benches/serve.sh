#!/usr/bin/env bash
# cairn serve against Debian's docker-registry (distribution 2.8, filesystem storage), side by
# side in one run, on loopback (issue 12, "Speed and load"):
#   1. one layer blob GET with curl (throughput; median of RUNS)
#   2. manifest GET latency at 16 concurrent clients (wrk, 5 s; p50 and p99)
#   3. skopeo push (copy oci: -> docker://) into an empty registry (median of RUNS)
#   4. skopeo pull (copy docker:// -> oci:) (median of RUNS)
#   5. 16 concurrent skopeo pulls (wall time)
#   6. peak RSS of each server over the whole run (VmHWM)
#   7. a second push of an image sharing all but one layer: blobs cairn received (its log)
#
# The image: one ~50 MB gzip layer made from this machine's /usr/bin, /usr/sbin and /usr/lib
# (a Debian system's files) plus a small layer, as an OCI layout; a second image shares the big
# layer and has another small one.
#
# Usage: bash benches/serve.sh    (CAIRN=path to test a given binary; default: cargo build
#                                  --release into ${CARGO_TARGET_DIR:-target}; RUNS=n, default 5;
#                                  BENCH_DIR=dir, default /tmp/cairn-serve-bench)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/cairn-serve-bench}
RUNS=${RUNS:-5}
TOKEN=bench-token-0123456789abcdef

log() { printf '== %s\n' "$*" >&2; }
for t in skopeo docker-registry wrk curl python3; do
    command -v "$t" >/dev/null || { log "installing what is missing"; bash "$REPO/scripts/deps.sh"; break; }
done
if [[ -z ${CAIRN:-} ]]; then
    (cd "$REPO" && cargo build --release -q -p cairn)
    CAIRN=${CARGO_TARGET_DIR:-$REPO/target}/release/cairn
fi
mkdir -p "$BENCH_DIR"
IMG=$BENCH_DIR/images

# --------------------------------------------------------------------------------------------
# The images (cached between runs).
if [[ ! -f $IMG/done ]]; then
    log "building the images"
    rm -rf "$IMG"
    mkdir -p "$IMG"
    python3 - "$IMG" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile
out = sys.argv[1]
def blob(layout, data, mt):
    d = hashlib.sha256(data).hexdigest()
    os.makedirs(f"{layout}/blobs/sha256", exist_ok=True)
    open(f"{layout}/blobs/sha256/{d}", "wb").write(data)
    return {"mediaType": mt, "digest": f"sha256:{d}", "size": len(data)}
def tar_of(paths=None, files=None):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.GNU_FORMAT) as t:
        for p in paths or []:
            t.add(p, arcname=p.lstrip("/"), recursive=False)
        for name, data in (files or {}).items():
            i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))
    return b.getvalue()
# ~50 MB compressed: regular files of /usr/bin, /usr/sbin and /usr/lib, in name order, until
# 150 MB of content (binaries and libraries gzip about 3:1).
files, total = [], 0
for top in ["/usr/bin", "/usr/sbin", "/usr/lib"]:
    for root, dirs, names in os.walk(top):
        dirs.sort()
        for n in sorted(names):
            p = os.path.join(root, n)
            if os.path.isfile(p) and not os.path.islink(p) and total < 150_000_000:
                files.append(p)
                total += os.path.getsize(p)
raw = tar_of(files)
base = (raw, gzip.compress(raw, 6, mtime=0))
for name, own in [("one", b"first image\n"), ("two", b"second image\n")]:
    layout = f"{out}/{name}"
    os.makedirs(layout, exist_ok=True)
    open(f"{layout}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
    small_raw = tar_of(files={"app/own": own})
    small = gzip.compress(small_raw, 6, mtime=0)
    gzmt = "application/vnd.oci.image.layer.v1.tar+gzip"
    layers = [blob(layout, base[1], gzmt), blob(layout, small, gzmt)]
    cfg = {"architecture": "amd64", "os": "linux", "config": {},
           "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(base[0]).hexdigest(),
                                                     "sha256:" + hashlib.sha256(small_raw).hexdigest()]}}
    c = blob(layout, json.dumps(cfg).encode(), "application/vnd.oci.image.config.v1+json")
    m = blob(layout, json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                 "config": c, "layers": layers}).encode(),
             "application/vnd.oci.image.manifest.v1+json")
    m["annotations"] = {"org.opencontainers.image.ref.name": "1"}
    open(f"{layout}/index.json", "w").write(json.dumps({"schemaVersion": 2, "manifests": [m]}))
print(f"base layer: {len(base[1])} bytes gzip, {len(base[0])} bytes tar", file=sys.stderr)
EOF
    touch "$IMG/done"
fi
BIG=$(python3 -c "import json,sys;m=json.load(open(sys.argv[1]+'/index.json'))['manifests'][0]['digest'].split(':')[1];print(json.load(open(sys.argv[1]+'/blobs/sha256/'+m))['layers'][0]['digest'])" "$IMG/one")
BIG_SIZE=$(stat -c %s "$IMG/one/blobs/sha256/${BIG#sha256:}")
log "base layer $BIG ($BIG_SIZE bytes)"

# --------------------------------------------------------------------------------------------
# Servers: started afresh (empty storage, new port) whenever a measurement needs it.
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
DIST_PID='' CAIRN_PID='' DIST='' CSRV=''
start_servers() {
    stop_servers
    rm -rf "$BENCH_DIR/dist" "$BENCH_DIR/store"
    mkdir -p "$BENCH_DIR/dist"
    local dp; dp=$(free_port)
    cat > "$BENCH_DIR/dist/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $BENCH_DIR/dist/data
http:
  addr: 127.0.0.1:$dp
EOF
    docker-registry serve "$BENCH_DIR/dist/config.yml" >"$BENCH_DIR/dist/log" 2>&1 &
    DIST_PID=$!
    DIST=127.0.0.1:$dp
    printf '[[token]]\nname = "bench"\nsecret = "%s"\nscopes = ["**:read,write"]\n[anonymous]\nscopes = ["**:read"]\n' \
        "$TOKEN" > "$BENCH_DIR/tokens.toml"
    "$CAIRN" --store "$BENCH_DIR/store" -v serve --listen 127.0.0.1:0 --tokens "$BENCH_DIR/tokens.toml" \
        >"$BENCH_DIR/serve.out" 2>"$BENCH_DIR/serve.log" &
    CAIRN_PID=$!
    for _ in $(seq 100); do
        [[ -s $BENCH_DIR/serve.out ]] && curl -s -o /dev/null "http://$DIST/v2/" && break
        sleep 0.1
    done
    CSRV=$(sed -n 's|listening on http://||p' "$BENCH_DIR/serve.out")
}
stop_servers() {
    for p in $DIST_PID $CAIRN_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    DIST_PID='' CAIRN_PID=''
}
trap stop_servers EXIT
peak() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$1/status"; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
push() { # registry creds-flag-args... ; prints seconds
    local reg=$1 name=$2 img=$3; shift 3
    local t0; t0=$(now)
    skopeo copy -q --dest-tls-verify=false "$@" "oci:$IMG/$img:1" "docker://$reg/$name:1" >/dev/null
    echo "$(now) - $t0" | bc
}
pull() {
    local reg=$1 name=$2 dest=$3
    rm -rf "$dest"
    local t0; t0=$(now)
    skopeo copy -q --src-tls-verify=false "docker://$reg/$name:1" "oci:$dest:1" >/dev/null
    echo "$(now) - $t0" | bc
}
CREDS=(--dest-creds "bench:$TOKEN")

# 3 and 4: push into empty registries, then pull, RUNS times.
log "skopeo push and pull, $RUNS runs"
: > "$BENCH_DIR/push.dist"; : > "$BENCH_DIR/push.cairn"; : > "$BENCH_DIR/pull.dist"; : > "$BENCH_DIR/pull.cairn"
for _ in $(seq "$RUNS"); do
    start_servers
    push "$DIST" app one >> "$BENCH_DIR/push.dist"
    push "$CSRV" app one "${CREDS[@]}" >> "$BENCH_DIR/push.cairn"
    pull "$DIST" app "$BENCH_DIR/pulled" >> "$BENCH_DIR/pull.dist"
    pull "$CSRV" app "$BENCH_DIR/pulled" >> "$BENCH_DIR/pull.cairn"
done
PUSH_D=$(median < "$BENCH_DIR/push.dist"); PUSH_C=$(median < "$BENCH_DIR/push.cairn")
PULL_D=$(median < "$BENCH_DIR/pull.dist"); PULL_C=$(median < "$BENCH_DIR/pull.cairn")

# 7: the second image shares the base layer.
before=$(grep -c 'received blob' "$BENCH_DIR/serve.log" || true)
push "$CSRV" app two "${CREDS[@]}" >/dev/null
push "$DIST" app two >/dev/null
after=$(grep -c 'received blob' "$BENCH_DIR/serve.log" || true)
SECOND=$((after - before))

# 1: blob GET throughput.
log "blob GET, $RUNS runs"
: > "$BENCH_DIR/get.dist"; : > "$BENCH_DIR/get.cairn"
for _ in $(seq "$RUNS"); do
    curl -s -o /dev/null -w '%{time_total}\n' "http://$DIST/v2/app/blobs/$BIG" >> "$BENCH_DIR/get.dist"
    curl -s -o /dev/null -w '%{time_total}\n' "http://$CSRV/v2/app/blobs/$BIG" >> "$BENCH_DIR/get.cairn"
done
GET_D=$(median < "$BENCH_DIR/get.dist"); GET_C=$(median < "$BENCH_DIR/get.cairn")

# 2: manifest GET latency, 16 connections.
log "manifest GET with wrk, 16 connections"
ACC='Accept: application/vnd.oci.image.manifest.v1+json'
wrk -t2 -c16 -d5s --latency -H "$ACC" "http://$DIST/v2/app/manifests/1" > "$BENCH_DIR/wrk.dist"
wrk -t2 -c16 -d5s --latency -H "$ACC" "http://$CSRV/v2/app/manifests/1" > "$BENCH_DIR/wrk.cairn"
lat() { awk -v p="$2" '$1 == p {print $2}' "$1"; }
rps() { awk '/Requests\/sec/ {print $2}' "$1"; }

# 5: 16 concurrent pulls.
log "16 concurrent pulls"
conc() {
    local reg=$1 t0; t0=$(now)
    for i in $(seq 16); do
        (rm -rf "$BENCH_DIR/c$i"; skopeo copy -q --src-tls-verify=false "docker://$reg/app:1" "oci:$BENCH_DIR/c$i:1" >/dev/null) &
    done
    wait
    echo "$(now) - $t0" | bc
}
CONC_D=$(conc "$DIST"); CONC_C=$(conc "$CSRV")
RSS_D=$(peak "$DIST_PID"); RSS_C=$(peak "$CAIRN_PID")
rm -rf "$BENCH_DIR"/c*

ratio() { echo "scale=2; $1 / $2" | bc; }
mbs() { echo "scale=0; $BIG_SIZE / $1 / 1000000" | bc; }
{
    echo "| measure | distribution 2.8 | cairn serve | cairn / distribution | goal |"
    echo "|---|---|---|---|---|"
    echo "| blob GET, $((BIG_SIZE / 1000000)) MB layer (median of $RUNS) | ${GET_D} s ($(mbs "$GET_D") MB/s) | ${GET_C} s ($(mbs "$GET_C") MB/s) | throughput $(ratio "$GET_D" "$GET_C")x | ≥ 1.5x |"
    echo "| manifest GET, 16 connections: p50 / p99 | $(lat "$BENCH_DIR/wrk.dist" 50%) / $(lat "$BENCH_DIR/wrk.dist" 99%) ($(rps "$BENCH_DIR/wrk.dist") req/s) | $(lat "$BENCH_DIR/wrk.cairn" 50%) / $(lat "$BENCH_DIR/wrk.cairn" 99%) ($(rps "$BENCH_DIR/wrk.cairn") req/s) | | p50 ≤ 1 ms |"
    echo "| skopeo push into an empty registry (median) | ${PUSH_D} s | ${PUSH_C} s | $(ratio "$PUSH_C" "$PUSH_D")x | ≤ 1.0x |"
    echo "| skopeo pull (median) | ${PULL_D} s | ${PULL_C} s | $(ratio "$PULL_C" "$PULL_D")x | ≤ 1.0x |"
    echo "| 16 concurrent skopeo pulls | ${CONC_D} s | ${CONC_C} s | $(ratio "$CONC_C" "$CONC_D")x | ≤ 1.0x |"
    echo "| server peak RSS (VmHWM, whole run) | ${RSS_D} MB | ${RSS_C} MB | | ≤ 64 MB |"
    echo "| second push sharing all but one layer: blobs received | | ${SECOND} | | the new layer (+ config) |"
} | tee "$BENCH_DIR/results.md"
