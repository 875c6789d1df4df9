#!/usr/bin/env bash
# Installs everything duckling needs to build and test on a fresh Debian machine:
# the Debian development packages (apt-get) and DuckDB's C library and header from the
# npm registry, unpacked into the git-ignored third_party/ folder. Safe to run twice: it
# only installs what is missing. Not for: building llama.cpp or fetching models (never).
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES="build-essential clang pkg-config libjansson-dev libpcre2-dev libutf8proc-dev \
libmicrohttpd-dev libcurl4-openssl-dev libssl-dev libedit-dev"

missing=""
for p in $DEB_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# node and npm (for the DuckDB download and the node-driven tests) may come from elsewhere
# than Debian; only install Debian's when there is none.
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
if [ -n "$missing" ]; then
  echo "deps: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# DuckDB 1.4.4: the shared library from the node bindings package, the header from the
# duckdb package (both are the same release).
TP=third_party/duckdb
if [ ! -f "$TP/lib/libduckdb.so" ] || [ ! -f "$TP/include/duckdb.h" ]; then
  echo "deps: fetching DuckDB 1.4.4 from the npm registry"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent @duckdb/node-bindings-linux-x64@1.4.4-r.4 duckdb@1.4.4 >/dev/null)
  mkdir -p "$TP/lib" "$TP/include"
  tar -xzf "$tmp"/duckdb-node-bindings-linux-x64-1.4.4-r.4.tgz -C "$tmp"
  so=$(find "$tmp/package" -name libduckdb.so | head -n1)
  [ -n "$so" ] || { echo "deps: libduckdb.so not found in the npm package" >&2; exit 1; }
  cp "$so" "$TP/lib/"
  mkdir -p "$tmp/h"
  tar -xzf "$tmp"/duckdb-1.4.4.tgz -C "$tmp/h" package/src/duckdb/src/include/duckdb.h
  cp "$tmp/h/package/src/duckdb/src/include/duckdb.h" "$TP/include/"
fi
echo "deps: ok"
