#!/bin/sh
# STAND-IN for the K3s install script (get.k3s.io). Implements the parts of
# its contract nautes-install relies on: air-gap mode only
# (INSTALL_K3S_SKIP_DOWNLOAD=true with /usr/local/bin/k3s already in place),
# INSTALL_K3S_EXEC choosing server or agent, a systemd unit + env file, the
# uninstall script, kubectl symlink, and "starting" the service (the
# stand-in k3s registers its node and exits, or stays running when a
# service manager starts it) only
# when the binary, unit or env file changed or INSTALL_K3S_FORCE_RESTART=true.
set -e
fatal() { echo "[ERROR] $*" >&2; exit 1; }

[ "$INSTALL_K3S_SKIP_DOWNLOAD" = "true" ] || fatal "would download K3s from the internet; set INSTALL_K3S_SKIP_DOWNLOAD=true for air-gap installs"
[ -x /usr/local/bin/k3s ] || fatal "/usr/local/bin/k3s is missing or not executable"

cmd=$(echo "${INSTALL_K3S_EXEC:-}" | awk '{print $1}')
if [ -z "$cmd" ]; then
  if [ -n "$K3S_URL" ]; then cmd=agent; else cmd=server; fi
fi
case "$cmd" in
  server) unit=k3s; uninstall=k3s-uninstall.sh ;;
  agent) unit=k3s-agent; uninstall=k3s-agent-uninstall.sh ;;
  *) fatal "unknown INSTALL_K3S_EXEC command: $cmd" ;;
esac

mkdir -p /etc/systemd/system /var/lib/rancher/k3s
# As the real script decides whether to (re)start the service: by the hashes
# of the binary, the unit and its env file only. A changed config.yaml,
# token or registries.yaml alone restarts nothing unless
# INSTALL_K3S_FORCE_RESTART=true.
installed_hashes() { sha256sum /usr/local/bin/k3s /etc/systemd/system/$unit.service /etc/systemd/system/$unit.service.env 2>&1 || true; }
pre_install=$(installed_hashes)
cat > /etc/systemd/system/$unit.service <<UNIT
[Unit]
Description=Lightweight Kubernetes
[Service]
Type=notify
EnvironmentFile=-/etc/systemd/system/$unit.service.env
ExecStart=/usr/local/bin/k3s $INSTALL_K3S_EXEC
UNIT
: > /etc/systemd/system/$unit.service.env
chmod 600 /etc/systemd/system/$unit.service.env

cat > /usr/local/bin/$uninstall <<UNINSTALL
#!/bin/sh
set -e
echo "\$(date +%s%N) uninstall $cmd" >> /etc/systemd/system/standin-uninstall.log
rm -f /etc/systemd/system/$unit.service /etc/systemd/system/$unit.service.env
rm -rf /etc/rancher/k3s /var/lib/rancher/k3s
rm -f /usr/local/bin/k3s /usr/local/bin/kubectl /usr/local/bin/$uninstall
UNINSTALL
chmod 755 /usr/local/bin/$uninstall
ln -sf k3s /usr/local/bin/kubectl

echo "$(date +%s%N) $cmd ${INSTALL_K3S_EXEC}" >> /var/lib/rancher/k3s/standin-installs.log
[ "$INSTALL_K3S_SKIP_START" = "true" ] && exit 0
if [ "$pre_install" = "$(installed_hashes)" ] && [ "$INSTALL_K3S_FORCE_RESTART" != true ]; then
  echo "[INFO]  No change detected so skipping service start"
  exit 0
fi
# With a service manager on the host (the systemctl stand-in, which the
# tests put in /usr/local/bin), the unit is (re)started through it, as the
# real script does; without one, k3s runs once in the foreground.
if [ -x /usr/local/bin/systemctl ]; then
  systemctl daemon-reload
  exec systemctl restart $unit
fi
exec /usr/local/bin/k3s $INSTALL_K3S_EXEC
