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
PY
du -sh fuzz/corpus
