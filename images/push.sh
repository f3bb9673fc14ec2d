#!/usr/bin/env bash
# Pushes lbtrain's two images and its Helm chart to a registry, so a cluster can pull them:
#
#   REGISTRY=registry.example.com/ml bash images/push.sh [LBTRAIN_ARCHIVE TRAINER_ARCHIVE]
#   make push REGISTRY=registry.example.com/ml [TAG=0.1.0] [PLAIN_HTTP=1] [COMPRESSION_LEVEL=1]
#
# gives REGISTRY/lbtrain:<version>, REGISTRY/lbtrain-trainer:<version> (OCI manifests) and the
# chart at oci://REGISTRY/charts/lbtrain, version <version>, whose appVersion is <version>: a
# `helm install` of it with `--set imageRegistry=REGISTRY` runs exactly these images.
# <version> is TAG, else the project's version (pyproject.toml, which must equal the chart's
# appVersion and version). stdout is one line per image, `<ref> <manifest digest>`, then the
# chart's `oci://` reference; progress and errors go to stderr.
#
# Why this way: the images are the docker-archives `make images` leaves in its cache (named here,
# or the newest of each name there), copied with skopeo: no Docker daemon and no image store, and
# a layer the registry already has is not sent again. The archives' layers are uncompressed, so
# skopeo compresses each on the way (gzip; the trainer's biggest layer is ~5.7 GB, where
# COMPRESSION_LEVEL=1 is several times faster than the default at a slightly larger size).
# Credentials are the tools' own: `skopeo login` (or REGISTRY_AUTH_FILE) and `helm registry login`.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CACHE=${LBTRAIN_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lbtrain-images}
CHART="$ROOT/deploy/helm/lbtrain"
HELM=${HELM:-helm}
REGISTRY=${REGISTRY:-}
TAG=${TAG:-}
PLAIN_HTTP=${PLAIN_HTTP:-}
COMPRESSION_LEVEL=${COMPRESSION_LEVEL:-}

log() { echo "push: $*" >&2; }
die() { log "$*"; exit 2; }
need() { command -v "$1" >/dev/null || die "$1 is required but not on PATH ($2)"; }

# A field of a flat YAML/TOML file: `key = "v"` or `key: "v"`, first match.
field() {  # <file> <key>
  sed -n -E "s/^$2[[:space:]]*[=:][[:space:]]*\"?([^\"[:space:]]+)\"?.*/\1/p" "$1" | head -n1
}

newest_archive() {  # <image name>: the newest cached docker-archive of that name, or nothing
  [ -d "$CACHE/archives" ] || return 0
  find "$CACHE/archives" -maxdepth 1 -name "$1-????????????????.tar" -printf '%T@ %p\n' \
    | sort -rn | head -n1 | cut -d' ' -f2-
}

main() {
  [ -n "$REGISTRY" ] || die "REGISTRY is not set: name the registry and path to push to, e.g. make push REGISTRY=registry.example.com/ml"
  case $REGISTRY in
    *://*) die "REGISTRY=$REGISTRY: give host[:port]/path without a scheme (PLAIN_HTTP=1 for a registry without TLS)" ;;
    */) die "REGISTRY=$REGISTRY: drop the trailing /" ;;
  esac
  need skopeo "Debian: apt-get install skopeo (make node-deps)"
  command -v "$HELM" >/dev/null || die "helm ($HELM) is not on PATH: name it in HELM=, or run make push, which uses the testbed's"

  local project app chart_version version
  project=$(field "$ROOT/pyproject.toml" version)
  app=$(field "$CHART/Chart.yaml" appVersion)
  chart_version=$(field "$CHART/Chart.yaml" version)
  if [ "$project" != "$app" ] || [ "$project" != "$chart_version" ]; then
    die "versions disagree: pyproject.toml $project, Chart.yaml appVersion $app, version $chart_version"
  fi
  version=${TAG:-$project}
  # The chart's version is the tag too (one name for a release); Helm wants SemVer.
  [[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] \
    || die "TAG=$version is not a SemVer version (like 0.1.0 or 0.1.0-rc.1): the chart is pushed under it too"

  local lbtrain_archive=${1:-} trainer_archive=${2:-}
  [ -n "$lbtrain_archive" ] || lbtrain_archive=$(newest_archive lbtrain)
  [ -n "$trainer_archive" ] || trainer_archive=$(newest_archive lbtrain-trainer)
  [ -n "$lbtrain_archive" ] && [ -n "$trainer_archive" ] \
    || die "no image archives in $CACHE/archives: build them first with make images"
  for archive in "$lbtrain_archive" "$trainer_archive"; do
    [ -f "$archive" ] || die "$archive does not exist: build the images with make images"
  done

  local tls=() copy_args=(--format oci --retry-times 2)
  if [ -n "$PLAIN_HTTP" ]; then tls=(--plain-http); copy_args+=(--dest-tls-verify=false); fi
  [ -z "$COMPRESSION_LEVEL" ] || copy_args+=(--dest-compress-format gzip --dest-compress-level "$COMPRESSION_LEVEL")

  local start=$SECONDS
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  push_image "$lbtrain_archive" "$REGISTRY/lbtrain:$version"
  push_image "$trainer_archive" "$REGISTRY/lbtrain-trainer:$version"

  log "chart: helm package $CHART (version and appVersion $version), helm push to oci://$REGISTRY/charts"
  "$HELM" package "$CHART" --version "$version" --app-version "$version" --destination "$WORK" >&2 \
    || die "helm package $CHART failed"
  "$HELM" push "$WORK/lbtrain-$version.tgz" "oci://$REGISTRY/charts" "${tls[@]}" >&2 2>"$WORK/helm.err" \
    || die "helm push to oci://$REGISTRY/charts failed: $(cat "$WORK/helm.err")"
  log "done in $((SECONDS - start))s"
  echo "oci://$REGISTRY/charts/lbtrain:$version"
}

last_error() {  # <skopeo's stderr>: its last message, without the log prefix
  local line
  line=$(grep -v '^[[:space:]]*$' "$1" | tail -n1)
  line=${line#*msg=\"}; line=${line%\"}
  echo "${line//\\\"/\"}"
}

push_image() {  # <docker-archive> <destination ref>
  local archive=$1 ref=$2 start=$SECONDS
  log "$ref: skopeo copy from $archive ($(du -h "$archive" | cut -f1))"
  if ! skopeo copy "${copy_args[@]}" --digestfile "$WORK/digest" \
       "docker-archive:$archive" "docker://$ref" >&2 2>"$WORK/skopeo.err"; then
    die "pushing $ref failed: $(last_error "$WORK/skopeo.err")"
  fi
  log "$ref: pushed in $((SECONDS - start))s"
  echo "$ref $(cat "$WORK/digest")"
}

main "$@"
