#!/usr/bin/env bash
# Makes a Debian package's binaries available: prometheus and promtool for the tests, wrk for
# `make bench-serve`.
#   bash scripts/debian_package.sh install PACKAGE [BINARY...]   installs PACKAGE when a binary is missing
#   bash scripts/debian_package.sh check PACKAGE [BINARY...]     exits 0 when every binary is on PATH
# BINARY defaults to PACKAGE. Idempotent; installing needs root or sudo, and apt-get.
set -euo pipefail

usage() { echo "usage: $0 install|check PACKAGE [BINARY...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
package=$2
shift 2
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=("$package")

have_binaries() {
  for binary in "${binaries[@]}"; do
    command -v "$binary" >/dev/null 2>&1 || return 1
  done
}

installed() { echo "$package: $(dpkg-query -W -f='${Version}' "$package" 2>/dev/null || command -v "${binaries[0]}")"; }

case "$action" in
  check)
    have_binaries
    ;;
  install)
    if have_binaries; then
      installed
      exit 0
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null 2>&1 || { echo "$package is missing and installing it needs root or sudo" >&2; exit 1; }
      sudo="sudo"
    fi
    command -v apt-get >/dev/null 2>&1 || { echo "$package is missing and there is no apt-get to install it" >&2; exit 1; }
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$package" >/dev/null
    have_binaries || { echo "apt-get installed $package but ${binaries[*]} are not all on PATH" >&2; exit 1; }
    installed
    ;;
  *)
    usage
    ;;
esac
