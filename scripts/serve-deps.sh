#!/usr/bin/env bash
# Packages the `cairn serve` tests and benchmarks need (tests/e2e/serve*.rs, benches/serve.sh):
# the registry clients (skopeo, podman, buildah, docker.io with its daemon, containerd's ctr),
# Debian's docker-registry (distribution 2.8) as the oracle and comparison, wrk for the
# manifest latency figure, openssl for the TLS test's certificate. Installed only if missing.
# Meant to be folded into the shared install script (scripts/deps.sh) once that exists.
set -euo pipefail
need=()
command -v skopeo >/dev/null || need+=(skopeo)
command -v podman >/dev/null || need+=(podman)
command -v buildah >/dev/null || need+=(buildah)
command -v dockerd >/dev/null || need+=(docker.io)
command -v containerd >/dev/null || need+=(containerd)
command -v ctr >/dev/null || need+=(containerd)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v wrk >/dev/null || need+=(wrk)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Debian's docker-registry package starts a system registry on :5000 on install; the tests start
# their own on free ports, so stop it if it runs (it would also hold 5000, cairn serve's default).
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi
