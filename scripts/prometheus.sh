#!/usr/bin/env bash
# Makes `prometheus` and `promtool` available for the tests (Debian's package, see STACK.md).
#   bash scripts/prometheus.sh install   installs the package when either binary is missing
#   bash scripts/prometheus.sh check     exits 0 when both binaries are on PATH
# Idempotent. The package's systemd unit is irrelevant here: the tests start the binary themselves.
set -euo pipefail

have_binaries() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }

case "${1:-install}" in
  check)
    have_binaries
    ;;
  install)
    if have_binaries; then
      echo "prometheus: $(prometheus --version 2>&1 | head -n1)"
      exit 0
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null 2>&1 || { echo "prometheus is missing and installing it needs root or sudo" >&2; exit 1; }
      sudo="sudo"
    fi
    command -v apt-get >/dev/null 2>&1 || { echo "prometheus is missing and there is no apt-get to install it" >&2; exit 1; }
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    have_binaries || { echo "apt-get installed prometheus but the binaries are not on PATH" >&2; exit 1; }
    echo "prometheus: $(prometheus --version 2>&1 | head -n1)"
    ;;
  *)
    echo "usage: $0 [install|check]" >&2
    exit 2
    ;;
esac
