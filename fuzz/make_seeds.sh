#!/usr/bin/env bash
# Regenerates the seed corpora in fuzz/corpus/ from real inputs: a small sample folder archived
# with `tar` (plain, gzip, zstd, pax with xattrs, GNU), stored with the `cairn` binary (normalized
# and --preserve) and pushed to a file:// remote, whose packs, pack indexes, trees (encoded by the
# library) and key records become seeds. Needs tar, zstd, gzip, python3.
#
#   fuzz/make_seeds.sh            (CAIRN=/path/to/cairn to skip building it)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

if [ -z "${CAIRN:-}" ]; then
    cargo build -p cairn
    CAIRN=$(realpath "${CARGO_TARGET_DIR:-target}")/debug/cairn
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CAIRN_STORE=$work/store CAIRN_CONFIG=$work/config.toml SOURCE_DATE_EPOCH=0

# The sample: a little of every kind cairn stores.
s=$work/sample
mkdir -p "$s/bin" "$s/share/doc" "$s/empty-dir"
printf '#!/bin/sh\necho hi\n' > "$s/bin/tool"
chmod 755 "$s/bin/tool"
for i in $(seq 1 40); do echo "line $i of a compressible text file"; done > "$s/share/doc/README"
printf 'x' > "$s/share/one-byte"
: > "$s/share/empty"
ln -s ../share/doc/README "$s/bin/readme-link"
ln "$s/share/one-byte" "$s/share/hardlink"
mkfifo "$s/share/fifo"
setfattr -n user.note -v seed "$s/share/one-byte" 2>/dev/null || true

a=$work/archives
mkdir -p "$a"
tar -C "$s" -cf "$a/sample.tar" .
tar -C "$s" -czf "$a/sample.tar.gz" .
tar -C "$s" --zstd -cf "$a/sample.tar.zst" .
tar -C "$s" --format=pax --xattrs -cf "$a/sample-pax-xattrs.tar" .
tar -C "$s" --format=gnu -cf "$a/sample-gnu.tar" bin share/doc

"$CAIRN" remote add origin "file://$work/remote" >/dev/null
"$CAIRN" put seeds/sample@1 "$s" >/dev/null
"$CAIRN" put --preserve seeds/sample-preserved@1 "$s" >/dev/null
"$CAIRN" push origin seeds/sample@1 seeds/sample-preserved@1 >/dev/null

rm -rf fuzz/corpus
python3 - "$repo/fuzz/corpus" "$work/remote" "$a"/* <<'PY'
import json, os, pathlib, struct, subprocess, sys

corpus, remote, archives = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]

def write(target, name, data):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)
    print(f"{target}/{name}: {len(data)} bytes", file=sys.stderr)

def unzstd(data):
    return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout

# archive_ingest: byte 0 is the options byte (bit 0: preserve), alternated across the seeds.
for i, path in enumerate(sorted(archives)):
    flag = i % 2
    name = os.path.basename(path) + (".preserve" if flag else ".normal")
    write("archive_ingest", name, bytes([flag]) + pathlib.Path(path).read_bytes())

# pack_index: [flags][u16 LE index length][index][pack]; flags 0 = the index as stored,
# 3 = the decompressed index (the harness compresses it and trusts the id in its header).
trees = set()
for n, idx_path in enumerate(sorted((remote / "packs").rglob("*.idx"))):
    idx = idx_path.read_bytes()
    pack = idx_path.with_suffix(".pack").read_bytes()
    raw = unzstd(idx)
    assert raw[:10] == b"cairn-idx\x01"
    write("pack_index", f"pushed-{n}.stored", bytes([0]) + struct.pack("<H", len(idx)) + idx + pack)
    write("pack_index", f"pushed-{n}.raw", bytes([3]) + struct.pack("<H", len(raw)) + raw + pack)
    (count,) = struct.unpack_from("<I", raw, 50)
    for e in range(count):
        at = 54 + 58 * e
        kind, enc = raw[at + 32], raw[at + 33]
        off, ln, size = struct.unpack_from("<QQQ", raw, at + 34)
        if kind == 2:  # a tree, encoded by the library
            stored = pack[off:off + ln]
            trees.add(unzstd(stored) if enc == 1 else stored)
for t, tree in enumerate(sorted(trees)):
    write("tree_decode", f"pushed-tree-{t}", tree)

# key_record: the remote records as pushed, their inner key records, and bare keys.
for n, k in enumerate(sorted((remote / "keys").rglob("*.key"))):
    data = k.read_bytes()
    write("key_record", f"remote-record-{n}.json", data)
    write("key_record", f"key-record-{n}.json", json.dumps(json.loads(data)["record"]).encode())
for n, k in enumerate(["app/linux-amd64@3f2a", "a.b/c_d+e=f:g-h", "v1.2.3/../x"]):
    write("key_record", f"key-{n}.txt", k.encode())

# oci_manifest: byte 0 = options (bit 0 docker-save, bit 1 gzip, bit 2 no --name), then
# NUL-separated documents; in document M, @N / #N become the sha256 hex / size of document N > M.
OM = "application/vnd.oci.image.manifest.v1+json"
OI = "application/vnd.oci.image.index.v1+json"
OC = "application/vnd.oci.image.config.v1+json"
OA = "application/vnd.oci.artifact.manifest.v1+json"
DM = "application/vnd.docker.distribution.manifest.v2+json"
DL = "application/vnd.docker.distribution.manifest.list.v2+json"
def desc(mt, n, extra=""):
    return '{"mediaType":"%s","digest":"sha256:@%d","size":#%d%s}' % (mt, n, n, extra)
named = ',"annotations":{"org.opencontainers.image.ref.name":"img:1"}'
plat = lambda a: ',"platform":{"architecture":"%s","os":"linux"}' % a
config = '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:@3"]}}'
def manifest(mt, cfg, layers, extra=""):
    return '{"schemaVersion":2,"mediaType":"%s","config":%s,"layers":[%s]%s}' % (
        mt, desc(OC, cfg), ",".join(desc("application/vnd.oci.image.layer.v1.tar", l) for l in layers), extra)
def index(mt, entries):
    return '{"schemaVersion":2,"mediaType":"%s","manifests":[%s]}' % (mt, ",".join(entries))
def seed(name, flags, docs):
    write("oci_manifest", name, bytes([flags]) + b"\0".join(d.encode() for d in docs))
seed("simple", 0, [index(OI, [desc(OM, 1, named)]), manifest(OM, 2, [3]), config, "layer one"])
seed("simple-unnamed.gz", 6, [index(OI, [desc(OM, 1, named)]), manifest(OM, 2, [3]), config, "layer one"])
seed("nested-index", 0, [
    index(OI, [desc(OI, 1, named)]),
    index(OI, [desc(OM, 2, plat("amd64")), desc(OM, 5, plat("arm64"))]),
    manifest(OM, 3, [4]), config.replace("@3", "@4"), "amd64 layer",
    manifest(OM, 6, [7]), config.replace("@3", "@7").replace("amd64", "arm64"), "arm64 layer"])
seed("artifact-subject", 0, [
    index(OI, [desc(OM, 1, named), desc(OA, 4)]),
    manifest(OM, 2, [3]), config, "layer",
    '{"mediaType":"%s","artifactType":"application/spdx+json","blobs":[%s],"subject":%s}' % (
        OA, desc("application/spdx+json", 5), desc(OM, 6)),
    '{"spdxVersion":"SPDX-2.3"}',
    manifest(OM, 7, [8]), config.replace("@3", "@8"), "layer"])
seed("docker-manifests", 0, [
    index(DL, [desc(DL, 1, named)]),
    index(DL, [desc(DM, 2, plat("amd64"))]),
    manifest(DM, 3, [4]).replace(OC, "application/vnd.docker.container.image.v1+json"),
    config.replace("@3", "@4"), "docker layer"])
seed("docker-save", 1, [
    '[{"Config":"blobs/sha256/@1","RepoTags":["img:1","img:latest"],"Layers":["blobs/sha256/@2"]}]',
    config.replace("@3", "@2"), "docker layer"])
seed("docker-save-legacy.gz", 3, [
    '[{"Config":"blobs/sha256/@1","RepoTags":null,"Layers":["blobs/sha256/@2","blobs/sha256/@2"]}]',
    config.replace("@3", "@2"), "layer"])
PY
du -sh fuzz/corpus
