#!/usr/bin/env bash
# The real Kubernetes control plane the tests run against: kube-apiserver,
# kube-controller-manager and kube-scheduler built from k8s.io/kubernetes
# (tests/controlplane/go.mod pins the release), kwok playing the kubelets,
# and our stand-in controllers (tests/controlplane/standins). Built once into
# a cache outside the repo, keyed by the sources, so a re-run costs nothing.
set -euo pipefail
script=$(realpath "$0")
cd "$(dirname "$0")/../../tests/controlplane"
kwok_version=v0.7.0
key=$( (cat "$script" go.mod go.sum; echo "kwok $kwok_version"; if [ -d standins ]; then find standins -type f -name "*.go" | sort | xargs cat; fi) | sha256sum | cut -c1-16)
cache=/opt/nautes-ci/cache/controlplane-$key
bin=/opt/nautes-ci/bin
tools="kube-apiserver kube-controller-manager kube-scheduler kwok"
[ -d standins ] && tools="$tools nautes-standin-controllers"
if [ ! -f "$cache/.done" ]; then
  mkdir -p "$cache"
  echo "building the control plane into $cache (first time on this machine: ~10 min on 2 cores)"
  # Without these the binaries report v0.0.0-master, and /version is part of
  # what the installer reads from a cluster.
  kversion=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' go.mod)
  major=${kversion#v}; minor=${major#*.}; major=${major%%.*}; minor=${minor%%.*}
  vpkg=k8s.io/component-base/version
  ldflags="-X $vpkg.gitVersion=$kversion -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
  go build -trimpath -ldflags "$ldflags" -o "$cache/" k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
  if [ -d standins ]; then go build -trimpath -o "$cache/nautes-standin-controllers" ./standins; fi
  GOBIN="$cache" GOFLAGS=-mod=mod go install -trimpath "sigs.k8s.io/kwok/cmd/kwok@$kwok_version"
  touch "$cache/.done"
fi
mkdir -p "$bin"
for t in $tools; do ln -sf "$cache/$t" "$bin/$t"; done
"$bin/kube-apiserver" --version
