#!/usr/bin/env bash
# cairn end to end: build cairn, store a real build output (cairn's own release build and its
# docs), push it to a file:// remote, restore it on a "second machine" (a cold store) from that
# remote, check it byte for byte, export it twice to show the archive is deterministic,
# re-import the archive, verify the store and show what gc would collect.
#
# Uses a throwaway store, remote and config unless CAIRN_STORE / CAIRN_CONFIG are set (the
# default store is ~/.cache/cairn).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

say "building cairn (release)"
cargo build --release --locked -p cairn
CAIRN=$(realpath "${CARGO_TARGET_DIR:-target}")/release/cairn

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CAIRN_STORE=${CAIRN_STORE:-$work/store}
export CAIRN_CONFIG=${CAIRN_CONFIG:-$work/config.toml}

say "assembling a build output: the cairn binary, README and docs"
mkdir -p "$work/dist/bin"
cp "$CAIRN" "$work/dist/bin/"
cp -r README.md docs "$work/dist/"
rev=$(git rev-parse --short HEAD 2>/dev/null || echo dev)
key="demo/cairn/linux-$(uname -m)@$rev"

say "cairn put $key (store: $CAIRN_STORE)"
id=$("$CAIRN" put "$key" "$work/dist" --label source=demo)
echo "root: $id"
[ "$("$CAIRN" hash "$work/dist")" = "$id" ] && echo "cairn hash agrees without touching the store"

say "cairn put again: nothing new is stored"
"$CAIRN" --json put "$key" "$work/dist" | grep -E '"new_blobs"'

say "cairn remote add origin file://$work/remote; cairn push origin $key"
"$CAIRN" remote add origin "file://$work/remote"
"$CAIRN" push origin "$key"

say "another machine: a cold store gets $key through the remote, then compare"
"$CAIRN" --store "$work/other-store" get "$key" "$work/restored" --remote origin
diff -r "$work/dist" "$work/restored" && echo "restored tree is identical"
"$work/restored/bin/cairn" --version
"$CAIRN" --store "$work/other-store" verify

say "cairn export, twice: byte-identical archives"
"$CAIRN" export "$key" -o "$work/a.tar.zst"
"$CAIRN" export "$id" -o "$work/b.tar.zst"
sha256sum "$work/a.tar.zst" "$work/b.tar.zst"
cmp "$work/a.tar.zst" "$work/b.tar.zst" && echo "archives are identical"

say "cairn put --from-archive of the export binds the same root"
id2=$("$CAIRN" put "$key-from-archive" "$work/a.tar.zst" --from-archive)
[ "$id2" = "$id" ] && echo "same root: $id2"

say "cairn ls / show / cat / log"
"$CAIRN" ls demo/
"$CAIRN" show "$key"
"$CAIRN" cat "$key" README.md | head -3
"$CAIRN" log "$key"

say "cairn verify"
"$CAIRN" verify

say "cairn rm + gc --dry-run (objects are shared with the other key, so nothing to free)"
"$CAIRN" rm "$key-from-archive"
"$CAIRN" gc --dry-run

say "done"
