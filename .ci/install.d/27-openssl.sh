#!/usr/bin/env bash
# The real `openssl` CLI: tests verify the certificates we issue with it, so
# a chain or usage mistake is caught by a tool that does not share our code.
set -euo pipefail
if command -v openssl >/dev/null 2>&1; then exit 0; fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends openssl >/dev/null
