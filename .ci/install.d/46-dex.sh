#!/usr/bin/env bash
# Real Dex v2.32.0 (the version the installer deploys), built from the Go
# module github.com/dexidp/dex at the tag's commit (tests/dex/go.mod pins it;
# its own `replace` of api/v2 resolves to the published v2.1.0 from a
# consuming module). The sign-in tests run it on loopback with the config the
# installer renders. Built once into a cache outside the repo, keyed by the
# sources, so a re-run costs nothing (~2 min the first time on 2 cores).
set -euo pipefail
script=$(realpath "$0")
cd "$(dirname "$0")/../../tests/dex"
version=v2.32.0
key=$( (cat "$script" go.mod go.sum tools.go) | sha256sum | cut -c1-16)
cache=/opt/nautes-ci/cache/dex-$key
bin=/opt/nautes-ci/bin
if [ ! -f "$cache/.done" ]; then
  mkdir -p "$cache"
  echo "building Dex $version into $cache"
  # cmd/dex prints main.version; the release build sets it the same way.
  go build -trimpath -ldflags "-X main.version=$version" -o "$cache/dex" github.com/dexidp/dex/cmd/dex
  touch "$cache/.done"
fi
mkdir -p "$bin"
ln -sf "$cache/dex" "$bin/dex"
"$bin/dex" version
