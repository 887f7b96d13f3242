#!/usr/bin/env bash
# Installs every package cairn's tests need that is missing: the Debian packages (apt-get, as
# root or through sudo), then the local object-store servers' Python and npm packages
# (scripts/services.sh install). Idempotent, and fast when everything is present: each package
# is looked for by a command it provides, and apt-get runs only when one is missing.
#
# Called by scripts/test.sh (the README's test command) and by .ci/run, so a fresh Debian machine
# with a Rust toolchain needs nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

# command that proves it is installed -> Debian package providing it
declare -A APT=(
  [tar]=tar
  [flock]=util-linux
  [unshare]=util-linux
  # tests/e2e/full_disk.rs mounts its own tmpfs.
  [mount]=mount
  # The OCI tests and the real-tools matrix (tests/e2e/real_tools*.rs): image builders and
  # readers, Docker's daemon (started by the tests on a private socket), and setfattr for the
  # xattrs the matrix puts in its images.
  [skopeo]=skopeo
  [umoci]=umoci
  [buildah]=buildah
  [podman]=podman
  [dockerd]=docker.io
  [containerd]=containerd
  [setfattr]=attr
  # tests/e2e/link.rs: the reflink path, on a loop-mounted XFS image it makes.
  [mkfs.xfs]=xfsprogs
  # cairn serve's tests and benchmark (tests/e2e/serve*.rs, benches/serve.sh): Debian's
  # docker-registry (distribution 2.8) as oracle and comparison, wrk for the manifest latency
  # figure, openssl for the TLS test's certificate.
  [ctr]=containerd
  [docker-registry]=docker-registry
  [wrk]=wrk
  [openssl]=openssl
  # scripts/services.sh: the local S3 (moto, pip), GCS (fake-gcs-server, pip) and Azure
  # (Azurite, npm) servers of the remote-sync tests, and curl to drive them.
  [curl]=curl
  # tests/e2e/lifecycle.rs: a clock set ahead for one cairn process (retention ages, remote gc's
  # clock-skew refusal).
  [faketime]=faketime
  [python3]=python3
  [node]=nodejs
  [npm]=npm
)

need=()
for cmd in "${!APT[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 ||
    need+=("${APT[$cmd]}")
done
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || {
      echo "deps.sh: missing packages (${need[*]}); run as root or install them" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  echo "deps.sh: installing ${need[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian's docker-registry package starts a system registry on :5000 on install; the tests start
# their own on free ports, so stop it if it runs (it would also hold 5000, cairn serve's default).
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

# Debian's own python3 refuses pip installs outside a virtualenv (PEP 668); the services'
# packages go into the user's site-packages or the machine's, as services.sh installs them.
export PIP_BREAK_SYSTEM_PACKAGES=1
scripts/services.sh install
