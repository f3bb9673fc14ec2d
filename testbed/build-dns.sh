#!/usr/bin/env bash
# Builds (or finds in the cache) CoreDNS, the cluster DNS of the testbed's real node, and prints
# the binary's path.
#
# Pods on the real node resolve Service names and an Indexed Job's `<job>-<i>.<subdomain>` names
# through it (devtools/lbtrain_dev/testbed/dns.py runs it as a host process on the bridge
# address). It comes from the wrapper module in go/coredns, pinned by its go.mod and go.sum, whose
# main links only the plugins the testbed's Corefile uses (no cloud back ends), so the build stays
# small. The cache key covers every input (the Go version, the pins, main.go and this script), so a
# change rebuilds and an unchanged tree answers at once. Progress goes to stderr; stdout is only
# the binary's path.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE_ROOT=${LBTRAIN_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lbtrain-testbed}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly"
command -v go >/dev/null || { echo "testbed: Go is required to build CoreDNS (go not on PATH)" >&2; exit 2; }
SRC="$HERE/go/coredns"
version=$(awk '{ for (i = 1; i < NF; i++) if ($i == "github.com/coredns/coredns") print $(i + 1) }' "$SRC/go.mod")
key=$({ go version; cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" "$0"; } | sha256sum | cut -c1-16)
DIR="$CACHE_ROOT/dns/$version-$key"
if [ -x "$DIR/coredns" ]; then
  echo "$DIR/coredns"; exit 0
fi
mkdir -p "$CACHE_ROOT/dns"
TMP="$DIR.tmp.$$"; rm -rf "$TMP"; mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
start=$(date +%s)
echo "testbed: building CoreDNS $version (cold: about 4 min on 2 cores)" >&2
(cd "$SRC" && go build -ldflags "-s -w" -o "$TMP/coredns" .) >&2
"$TMP/coredns" -version >&2
echo "testbed: CoreDNS built in $(( $(date +%s) - start ))s" >&2
mv "$TMP" "$DIR"   # atomic publish: a half build never looks cached
trap - EXIT
echo "$DIR/coredns"
