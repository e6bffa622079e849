#!/usr/bin/env bash
# Real Ansible (Debian's ansible-core): the peer the SSH benchmarks compare
# against, and the runner for our playbooks.
set -euo pipefail
if command -v ansible-playbook >/dev/null 2>&1; then exit 0; fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends ansible-core >/dev/null
ansible-playbook --version | sed -n 1p  # reads all input: head would leave the writer to die of SIGPIPE under pipefail
