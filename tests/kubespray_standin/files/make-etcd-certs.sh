#!/bin/sh
# The stand-in's etcd PKI: a CA, and for each member HOST=IP a member
# (peer/server) and an admin (client) certificate, under the file names
# Kubespray gives them in etcd_cert_dir (ca.pem, member-HOST.pem,
# member-HOST-key.pem, admin-HOST.pem, admin-HOST-key.pem). Kept between
# runs: a re-run issues only what is missing.
set -e
dir=$1
shift
mkdir -p "$dir"
cd "$dir"
[ -f ca.pem ] || openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 3650 -subj /CN=etcd-ca 2>/dev/null
for pair in "$@"; do
  host=${pair%%=*}
  ip=${pair#*=}
  for kind in member admin; do
    [ -f "$kind-$host.pem" ] && continue
    openssl req -newkey rsa:2048 -nodes -keyout "$kind-$host-key.pem" -out "$kind-$host.csr" -subj "/CN=etcd-$kind-$host" 2>/dev/null
    printf 'subjectAltName=IP:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' "$ip" >"$kind-$host.ext"
    openssl x509 -req -in "$kind-$host.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out "$kind-$host.pem" -days 3650 -extfile "$kind-$host.ext" 2>/dev/null
  done
done
