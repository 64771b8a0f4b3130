#!/usr/bin/env bash
# Debian packages used by the tests and scripts (Prometheus, node-exporter, Chromium,
# docker-compose for validating the compose file, wrk for benchmarks, HAProxy in front of replicas,
# PostgreSQL for the SQL loader's test, Alertmanager and amtool for the alert route, podman, runc,
# debootstrap and CNI's dnsname plugin for the image and the compose stack: scripts/images.sh);
# installs only what is missing, and says what before it does.
set -euo pipefail
declare -A package_of=([promtool]=prometheus [haproxy]=haproxy [prometheus-node-exporter]=prometheus-node-exporter [chromium]=chromium [docker-compose]=docker-compose [wrk]=wrk [pg_ctlcluster]=postgresql [amtool]=prometheus-alertmanager [podman]=podman [runc]=runc [debootstrap]=debootstrap [/usr/lib/cni/dnsname]=golang-github-containernetworking-plugin-dnsname)
missing=()
for command in "${!package_of[@]}"; do
  command -v "$command" >/dev/null 2>&1 || [ -e "$command" ] || missing+=("${package_of[$command]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
