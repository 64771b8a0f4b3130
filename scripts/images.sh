#!/usr/bin/env bash
# Container images for this machine and CI, where no Docker engine or registry is reachable:
# podman from Debian, a registry-free Debian base, stand-ins for the images the compose file names
# (same names, same entrypoints; built from Debian's packages), and the project's own Bento image
# built by `bentoml containerize --backend podman` from the unchanged bentofile.
# Stand-ins are rebuilt only when their Containerfile changes (a label holds its digest).
# Usage: scripts/images.sh [standins|bento]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=devtools/images
PYTHON=${PYTHON:-.venv/bin/python}
BENTO_IMAGE=${FLAT_PRICE_IMAGE:-flat_price:latest}
sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
say() { echo "[images] $*" >&2; }
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

install_podman() {
  local missing=()
  for pair in podman:podman runc:runc debootstrap:debootstrap; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  # Compose service names resolve on a podman (CNI) network only with the dnsname plugin.
  [ -e /usr/lib/cni/dnsname ] || missing+=(golang-github-containernetworking-plugin-dnsname)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages for containers: ${missing[*]} (about 5 minutes)"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # crun (podman's default) refuses this kernel's cgroup layout and raising limits: runc with explicit ulimits.
  local conf=/etc/containers/containers.conf
  if ! grep -q '^runtime = "runc"' "$conf" 2>/dev/null; then
    say "configuring podman in $conf: runtime runc, nofile/nproc ulimits"
    $sudo_cmd mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n\n[engine]\nruntime = "runc"\n' |
      $sudo_cmd tee "$conf" >/dev/null
  fi
}

# build NAME CONTAINERFILE: podman build unless an image NAME with the same inputs' digest exists.
build() {
  local name=$1 file=$2 extra=${3:-} digest
  digest=$( (cat "$file" $extra; podman image inspect --format '{{.Id}}' localhost/debian-base:bookworm) | sha256sum | cut -c1-16)
  if [ "$(podman image inspect --format '{{ index .Labels "flatprice.inputs" }}' "$name" 2>/dev/null)" = "$digest" ]; then
    say "$name: cached"
    return
  fi
  local started; started=$(date +%s)
  say "$name: building from $file"
  podman build --quiet --format docker --label "flatprice.inputs=$digest" -t "$name" -f "$file" "$HERE" >/dev/null
  say "$name: built in $(elapsed "$started")"
}

base_image() {
  local name=localhost/debian-base:bookworm digest
  # Inputs: the recipe's version (raise it when the recipe below changes) and the CA certificates copied in.
  digest=$( (echo "bookworm-minbase-1"; cat /usr/local/share/ca-certificates/*.crt 2>/dev/null) | sha256sum | cut -c1-16)
  if [ "$(podman image inspect --format '{{ index .Labels "flatprice.inputs" }}' "$name" 2>/dev/null)" = "$digest" ]; then
    say "$name: cached"
    return
  fi
  local started rootfs mirror
  started=$(date +%s)
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d)
  say "$name: debootstrap bookworm from $mirror (about 80 s)"
  $sudo_cmd debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  echo "deb $mirror bookworm main" >"$rootfs/etc/apt/sources.list"
  # This machine reaches PyPI and Debian through a TLS proxy: its CA goes into the base, not into the user's image.
  if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  fi
  tar -C "$rootfs" -c . | podman import --quiet --change "LABEL flatprice.inputs=$digest" --change 'CMD ["bash"]' - "$name" >/dev/null
  rm -rf "$rootfs"
  say "$name: built in $(elapsed "$started")"
}

standins() {
  base_image
  build docker.io/library/python:3.11-slim "$HERE/python.Containerfile"
  build docker.io/library/haproxy:2.6.12 "$HERE/haproxy.Containerfile"
  build docker.io/prom/prometheus:v2.53.2 "$HERE/prometheus.Containerfile"
  build docker.io/prom/alertmanager:v0.28.1 "$HERE/alertmanager.Containerfile"
  build docker.io/library/postgres:15.20 "$HERE/postgres.Containerfile" "$HERE/postgres-entrypoint.sh"
}

bento() {
  local started; started=$(date +%s)
  say "make image IMAGE_BACKEND=podman: bentoml build, then bentoml containerize -> $BENTO_IMAGE (a few minutes cold)"
  # docker format keeps the template's HEALTHCHECK (OCI drops it).
  BUILDAH_FORMAT=docker make --no-print-directory image IMAGE_BACKEND=podman IMAGE="$BENTO_IMAGE" >/tmp/flatprice-containerize.log 2>&1 ||
    { tail -40 /tmp/flatprice-containerize.log >&2; exit 1; }
  say "$BENTO_IMAGE: built in $(elapsed "$started"), $(podman image inspect --format '{{.Size}}' "$BENTO_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
}

install_podman
case "${1:-all}" in
  standins) standins ;;
  bento) bento ;;
  all) standins; bento ;;
  *) echo "usage: $0 [standins|bento]" >&2; exit 2 ;;
esac
