#!/usr/bin/env bash
# Runs cairn's fuzz targets (fuzz/, a cargo-fuzz project outside the main workspace).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS (default 60) is the run time per target; TARGETs default to all of them
# (tree_decode archive_ingest pack_index key_record oci_manifest). Not part of CI.
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the nightly-only flags that
# cargo-fuzz passes. Installs cargo-fuzz from crates.io if it is missing.
#
# Environment:
#   FUZZ_SANITIZER  address (default) or none (faster, catches only panics and aborts)
#   FUZZ_ARGS       extra libFuzzer flags, e.g. "-max_len=65536 -timeout=30"; to keep going
#                   past crashes (each saved in fuzz/artifacts/TARGET/): "-fork=1 -ignore_crashes=1"
#   FUZZ_TARGET_DIR cargo target folder (default fuzz/target, gitignored)
#
# Crashes land in fuzz/artifacts/TARGET/; minimize one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin --fuzz-dir fuzz -a TARGET fuzz/artifacts/TARGET/crash-...
# and keep the result under fuzz/regressions/TARGET/ (replayed by `scripts/fuzz.sh replay`).
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/fuzz/target}"
sanitizer="${FUZZ_SANITIZER:-address}"
# A failed `try_reserve` must fail as it does in production (a null from malloc), not abort.
export ASAN_OPTIONS="${ASAN_OPTIONS:-allocator_may_return_null=1}"
all_targets=(tree_decode archive_ingest pack_index key_record oci_manifest)
# -a: debug assertions (and so integer overflow checks) in the fuzzed code.
flags=(--fuzz-dir fuzz --sanitizer "$sanitizer" -a)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

if [ "${1:-}" = replay ]; then
    # Runs every saved reproducer once (no fuzzing); exits non-zero if any still fails.
    shift
    targets=("$@")
    [ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
    status=0
    for t in "${targets[@]}"; do
        dir="fuzz/regressions/$t"
        [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ] || continue
        echo "== replaying $dir" >&2
        cargo fuzz run "${flags[@]}" "$t" "$dir"/* -- -runs=1 || status=1
    done
    exit $status
fi

seconds="${1:-60}"
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

for t in "${targets[@]}"; do
    echo "== fuzzing $t for ${seconds}s (sanitizer: $sanitizer)" >&2
    mkdir -p "fuzz/corpus/$t"
    # Writes new corpus entries to a scratch folder so the committed seeds stay small; the
    # committed seeds are read from fuzz/corpus/TARGET.
    scratch="$CARGO_TARGET_DIR/corpus/$t"
    mkdir -p "$scratch"
    dict=()
    [ -f "fuzz/dicts/$t.dict" ] && dict=(-dict="$PWD/fuzz/dicts/$t.dict")
    # shellcheck disable=SC2086
    cargo fuzz run "${flags[@]}" "$t" "$scratch" "fuzz/corpus/$t" \
        -- -max_total_time="$seconds" -print_final_stats=1 \
        "${dict[@]}" ${FUZZ_ARGS:-}
done
