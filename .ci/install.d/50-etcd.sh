#!/usr/bin/env bash
# Real etcd (Debian's 3.4.23): the datastore of the test control plane, and
# the etcd whose snapshots the backup tests take. Only the binaries are used;
# Debian's service is left stopped (each test starts its own on a free port).
set -euo pipefail
if command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1; then exit 0; fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
systemctl disable --now etcd >/dev/null 2>&1 || service etcd stop >/dev/null 2>&1 || true
etcd --version | sed -n 1p  # reads all input: head would leave the writer to die of SIGPIPE under pipefail
