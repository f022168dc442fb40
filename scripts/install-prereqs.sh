#!/usr/bin/env bash
# Installs what the build and the tests need and a fresh Debian machine may lack. Idempotent:
# when everything is present it only checks and returns.
set -euo pipefail

need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
command -v tcpdump >/dev/null 2>&1 || need_apt+=(tcpdump)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
# The script tests (shared/install/tests/scripts.rs) run shellcheck on every shell script.
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)

if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need_apt[*]} (run as root, or install them with apt-get)" >&2
    exit 1
  fi
  echo "installing: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
