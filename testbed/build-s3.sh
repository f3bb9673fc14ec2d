#!/usr/bin/env bash
# Builds (or finds in the cache) versitygw, the S3-compatible server of the object-store tests,
# and prints the binary's path.
#
# versitygw (github.com/versity/versitygw) is an S3 gateway whose `posix` backend keeps buckets
# as folders: one static Go binary, no Docker, no cloud account. The tests run it on 127.0.0.1
# (devtools/lbtrain_dev/testbed/s3server.py) and the trainer writes to it through s3fs exactly
# as it writes to AWS S3. It comes from the wrapper module in go/s3, pinned by its go.mod and
# go.sum. The cache key covers every input (the Go version, the pins and this script), so a
# change rebuilds and an unchanged tree answers at once. Progress goes to stderr; stdout is only
# the binary's path.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE_ROOT=${LBTRAIN_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lbtrain-testbed}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly"
command -v go >/dev/null || { echo "testbed: Go is required to build versitygw (go not on PATH)" >&2; exit 2; }
version=$(awk '$1 == "github.com/versity/versitygw" {print $2}' "$HERE/go/s3/go.mod")
key=$({ go version; cat "$HERE/go/s3/go.mod" "$HERE/go/s3/go.sum" "$0"; } | sha256sum | cut -c1-16)
DIR="$CACHE_ROOT/s3/$version-$key"
if [ -x "$DIR/versitygw" ]; then
  echo "$DIR/versitygw"; exit 0
fi
mkdir -p "$CACHE_ROOT/s3"
TMP="$DIR.tmp.$$"; rm -rf "$TMP"; mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
start=$(date +%s)
echo "testbed: building versitygw $version (cold: about 4 to 6 min on 2 cores)" >&2
(cd "$HERE/go/s3" && go build -ldflags "-s -w" -o "$TMP/versitygw" github.com/versity/versitygw/cmd/versitygw) >&2
"$TMP/versitygw" --version >&2 || true
echo "testbed: versitygw built in $(( $(date +%s) - start ))s" >&2
mv "$TMP" "$DIR"   # atomic publish: a half build never looks cached
trap - EXIT
echo "$DIR/versitygw"
