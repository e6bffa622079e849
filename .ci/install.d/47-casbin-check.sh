#!/usr/bin/env bash
# casbin-check (tests/casbin): the real casbin library (github.com/casbin/casbin/v2,
# as Argo CD 2.4 uses casbin v2) loaded with a model equivalent to Argo CD
# 2.4's RBAC model and Argo CD's glob matching, answering the enforce
# questions the Argo CD RBAC tests ask of the policy.csv the installer
# renders. Its own unit test runs first (it pins why casbin's built-in
# globMatch/keyMatch are not used). Built once into a cache outside the
# repo, keyed by the sources.
set -euo pipefail
script=$(realpath "$0")
cd "$(dirname "$0")/../../tests/casbin"
key=$( (cat "$script" go.mod go.sum ./*.go) | sha256sum | cut -c1-16)
cache=/opt/nautes-ci/cache/casbin-check-$key
bin=/opt/nautes-ci/bin
if [ ! -f "$cache/.done" ]; then
  mkdir -p "$cache"
  echo "building casbin-check into $cache"
  go vet ./...
  go test ./...
  go build -trimpath -o "$cache/casbin-check" .
  touch "$cache/.done"
fi
mkdir -p "$bin"
ln -sf "$cache/casbin-check" "$bin/casbin-check"
