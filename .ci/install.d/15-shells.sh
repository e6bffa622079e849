#!/usr/bin/env bash
# zsh and fish, to run the completion scripts we generate (tests/fast/commands.rs).
set -euo pipefail
if command -v zsh >/dev/null 2>&1 && command -v fish >/dev/null 2>&1; then exit 0; fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends zsh fish >/dev/null
