#!/usr/bin/env bash
# Installs what line coverage needs, when missing: Debian's llvm-22 (the LLVM
# of rustc 1.95, whose profile format it reads) and cargo-llvm-cov from
# crates.io. Idempotent.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v llvm-cov-22 >/dev/null 2>&1; then
  echo "== installing llvm-22"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq llvm-22 >/dev/null
fi
if ! command -v cargo-llvm-cov >/dev/null 2>&1; then
  echo "== installing cargo-llvm-cov"
  cargo install --locked --quiet cargo-llvm-cov
fi
