#!/usr/bin/env bash
# Makes `wrk` (the HTTP load generator of `make bench-serve`) available: Debian's package.
#   bash scripts/wrk.sh install   installs the package when the binary is missing
#   bash scripts/wrk.sh check     exits 0 when wrk is on PATH
# Idempotent. A compiled generator keeps the benchmark's own CPU use small on a 2-core machine.
set -euo pipefail

have_binary() { command -v wrk >/dev/null 2>&1; }

# wrk has no --version flag; its usage banner's first line names the version.
version() { wrk -v 2>&1 | head -n1 || true; }

case "${1:-install}" in
  check)
    have_binary
    ;;
  install)
    if have_binary; then
      echo "wrk: $(version)"
      exit 0
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null 2>&1 || { echo "wrk is missing and installing it needs root or sudo" >&2; exit 1; }
      sudo="sudo"
    fi
    command -v apt-get >/dev/null 2>&1 || { echo "wrk is missing and there is no apt-get to install it" >&2; exit 1; }
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null
    have_binary || { echo "apt-get installed wrk but the binary is not on PATH" >&2; exit 1; }
    echo "wrk: $(version)"
    ;;
  *)
    echo "usage: $0 [install|check]" >&2
    exit 2
    ;;
esac
