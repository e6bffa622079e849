#!/usr/bin/env bash
# Real OpenSSH server + client for the test hosts (one sshd per host).
set -euo pipefail
if command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; then
  if command -v ssh-keyscan >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then exit 0; fi
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends openssh-server openssh-client sudo >/dev/null
