#!/usr/bin/env bash
# Builds (or finds in the cache) Kueue's manager and its container image, and prints the cache
# folder on stdout. The folder holds:
#   manager     the static binary (sigs.k8s.io/kueue/cmd/kueue at the pinned release)
#   image.tar   a docker-archive of the image (`ctr images import` reads it)
#   image.ref   the image's name inside that archive (localhost/kueue:<version>-<key>)
#   chart/      the Helm chart that ships inside the same Go module (charts/kueue)
#
# Why: lbtrain's training Jobs queue through Kueue on shared GPU clusters, so the testbed runs a
# real one, installed as its users install it (its own chart). No registry can be reached from
# the node and this machine has no Docker daemon, so the manager is built from its Go module in
# the wrapper module go/kueue (pinned by go.mod and go.sum) and packed with buildah into an image
# shaped like upstream's (Dockerfile: static binary at /manager, USER 65532:65532, entrypoint
# the manager, FROM a base without a shell). The chart is copied from the module source the
# build used, so chart and binary are always the same release.
#
# The cache key covers every input (the Go version, the pins and this script): a change builds
# anew, an unchanged tree answers at once. A folder is published by a rename, so a half build
# never looks cached. buildah's storage is this cache's own, never the system's. Progress goes to
# stderr; stdout is only the folder.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE_ROOT=${LBTRAIN_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lbtrain-testbed}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly"
MODULE=sigs.k8s.io/kueue
log() { echo "testbed: $*" >&2; }
command -v go >/dev/null || { log "Go is required to build Kueue (go not on PATH)"; exit 2; }
command -v buildah >/dev/null || { log "buildah is required to pack Kueue's image (testbed/node-deps.sh installs it)"; exit 2; }
version=$(awk -v m="$MODULE" '$1 == m {print $2}' "$HERE/go/kueue/go.mod")
key=$({ go version; cat "$HERE/go/kueue/go.mod" "$HERE/go/kueue/go.sum" "$0"; } | sha256sum | cut -c1-16)
DIR="$CACHE_ROOT/kueue/$version-$key"
if [ -f "$DIR/image.tar" ]; then
  echo "$DIR"; exit 0
fi
mkdir -p "$CACHE_ROOT/kueue"
exec 9>"$CACHE_ROOT/kueue/.lock"
flock 9   # one build at a time; a second caller finds the first one's result below
if [ -f "$DIR/image.tar" ]; then
  echo "$DIR"; exit 0
fi
TMP="$DIR.tmp.$$"; rm -rf "$TMP"; mkdir -p "$TMP"
STORE="$CACHE_ROOT/kueue/buildah"
bh() { buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver vfs "$@"; }
ctr=""
cleanup() {
  if [ -n "$ctr" ]; then bh rm "$ctr" >/dev/null 2>&1 || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
start=$(date +%s)
log "building Kueue $version's manager (cold: about 6 to 10 min on 2 cores)"
(cd "$HERE/go/kueue" && go build -ldflags "-s -w -X $MODULE/pkg/version.GitVersion=$version" \
  -o "$TMP/manager" "$MODULE/cmd/kueue") >&2
log "Kueue's manager built in $(( $(date +%s) - start ))s"

src=$(cd "$HERE/go/kueue" && go list -m -f '{{.Dir}}' "$MODULE")
cp -r "$src/charts/kueue" "$TMP/chart"
chmod -R u+w "$TMP/chart"   # the module cache is read-only; the copy is ours

ref="localhost/kueue:$version-$key"
start=$(date +%s)
ctr=$(bh from --name "lbtrain-kueue-$$" scratch)
bh copy --chmod 0755 "$ctr" "$TMP/manager" /manager >&2
bh config --user 65532:65532 --workingdir / --entrypoint '["/manager"]' --cmd '' \
  --label org.opencontainers.image.source="https://github.com/kubernetes-sigs/kueue" \
  --label org.opencontainers.image.version="$version" "$ctr" >&2
bh commit --rm "$ctr" "$ref" >&2
ctr=""
bh push "$ref" "docker-archive:$TMP/image.tar:$ref" >&2
bh rmi "$ref" >/dev/null 2>&1 || true   # the archive is the product
echo "$ref" > "$TMP/image.ref"
log "Kueue's image $ref packed in $(( $(date +%s) - start ))s"
mv "$TMP" "$DIR"   # atomic publish: a half build never looks cached
trap - EXIT
echo "$DIR"
