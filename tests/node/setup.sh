#!/usr/bin/env bash
# Installs the node test's npm packages (exact versions from package.json) into
# tests/node/node_modules (git-ignored). Skips the install when they are already there.
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
