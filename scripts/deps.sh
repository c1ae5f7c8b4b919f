#!/bin/sh
# Installs the Debian packages cairn needs to build and test, if any are missing.
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -eu
PKGS="gcc make pkg-config clang libclang-rt-14-dev libyaml-dev libssl-dev libnghttp2-dev zlib1g-dev libbrotli-dev \
      curl openssl nghttp2-client python3 python3-pytest python3-requests python3-dnspython prometheus nsd dnsperf knot knot-dnsutils bind9-dnsutils libsnappy-dev libpcre2-dev prometheus-node-exporter python3-snappy python3-yaml prometheus-alertmanager libjansson-dev libmaxminddb-dev mmdb-bin libsqlite3-dev libexpat1-dev awscli python3-boto3 s3cmd rclone python3-munch python3-isodate python3-tz python3-lxml skopeo podman runc docker-registry libzstd-dev zstd python3-websocket python3-py-zipkin restic etcd-server etcd-client chromium fonts-dejavu-core whois libcrypt-dev"
# npm installs the JavaScript clients the tests drive; any Node.js 18+ will do
command -v npm >/dev/null 2>&1 || PKGS="$PKGS nodejs npm"
# kubectl renders the Kubernetes overlays (kubectl kustomize); any recent one will do
command -v kubectl >/dev/null 2>&1 || PKGS="$PKGS kubernetes-client"
missing=""
for p in $PKGS; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$st" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
    esac
done
[ -z "$missing" ] && exit 0
echo "deps: missing Debian packages:$missing" >&2
if [ "$(id -u)" != 0 ]; then
    echo "deps: run as root:  apt-get update && apt-get install -y$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
# Debian's server packages may start their own system service on install; cairn's
# tests run their own instances on their own ports, so stop any that started.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl stop prometheus prometheus-node-exporter prometheus-alertmanager nsd knot docker-registry etcd 2>/dev/null || true
fi
