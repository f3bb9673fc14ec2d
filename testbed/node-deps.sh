#!/usr/bin/env bash
# Installs what the testbed's real node and the image builds need, from Debian's packages:
# containerd, runc and the CNI plugins (the node's runtime), iptables and iproute2 (kube-proxy,
# the bridge), buildah and mmdebstrap (images without a Docker daemon), skopeo (`make push`) and
# docker-registry (CNCF Distribution: the testbed's registry, which the node pulls from). Does
# nothing when all are present, so `make test` pays for apt only on a fresh machine.
set -euo pipefail
need=()
for pair in containerd:containerd ctr:containerd runc:runc iptables:iptables ip:iproute2 \
            buildah:buildah mmdebstrap:mmdebstrap gcc:gcc skopeo:skopeo \
            docker-registry:docker-registry; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "node-deps: missing Debian packages: ${need[*]}; install them as root:" >&2
  echo "  apt-get install -y ${need[*]}" >&2
  exit 2
fi
echo "node-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# Debian's containerd package would start its own daemon under systemd; there is none here, and
# the testbed starts containerd with its own config; the same holds for docker-registry.
apt-get install -y -qq $(printf '%s\n' "${need[@]}" | sort -u) >&2
