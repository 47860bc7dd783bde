#!/usr/bin/env bash
# Installs, from Debian, what `npm run bench` needs and does not find: the load generators (wrk, h2load),
# the peers it compares against (haproxy, nginx, and stunnel4 for the TCP tunnel rows) and a C toolchain +
# OpenSSL headers for the LD_PRELOAD client-certificate shim and the tunnel load tool (shim/tunload.c).
# Idempotent: a tool already on PATH is left alone; prints what it installed.
# Needs root (apt-get). Safe to run repeatedly.
set -euo pipefail

# command -> Debian package that provides it
declare -A PKG_FOR=(
  [wrk]=wrk
  [h2load]=nghttp2-client
  [haproxy]=haproxy
  [nginx]=nginx
  [stunnel4]=stunnel4
  [gcc]=gcc
  [openssl]=openssl
)

missing=()
for cmd in "${!PKG_FOR[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
    missing+=("${PKG_FOR[$cmd]}")
  fi
done
# Headers for the shim (ssl.h) and libc headers/crt files for gcc -shared.
if ! [ -f /usr/include/openssl/ssl.h ]; then missing+=(libssl-dev); fi
if ! dpkg -s libc6-dev >/dev/null 2>&1; then missing+=(libc6-dev); fi

if [ "${#missing[@]}" -eq 0 ]; then
  echo "bench/install.sh: everything present (wrk, h2load, haproxy, nginx, stunnel4, gcc, libssl-dev); nothing installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/install.sh: missing ${missing[*]}; run as root (apt-get) to install them" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "bench/install.sh: installing ${missing[*]}"
apt-get update -qq
# --no-install-recommends keeps nginx/haproxy from pulling in extra services.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# The Debian packages start nginx/haproxy as services where an init system runs; the bench starts its own
# instances on loopback ports, so stop any service instance it may have started (ignore failures: in a
# container there is usually no init system).
for svc in nginx haproxy stunnel4; do
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done

echo "bench/install.sh: installed ${missing[*]}"
