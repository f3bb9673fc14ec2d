#!/usr/bin/env bash
# Builds (or finds in the cache) lbtrain's two images without a Docker daemon or a registry,
# and prints one line per image on stdout: `<ref> <absolute docker-archive path>`, the
# webhook/operator image (images/lbtrain) first, then the trainer (images/trainer).
#
#   bash images/build.sh            # both images
#   bash images/build.sh trainer    # only the named ones (lbtrain, trainer), in that order
#
# Why this way: the real-node tests import the project's own images into a containerd that can
# reach no registry, and this machine kind has no Docker daemon. So the base is made from
# Debian's packages with mmdebstrap, the Dockerfiles are built as they are with buildah (the
# base passed as a build argument), and each image leaves as a docker-archive that
# `ctr images import` reads. The names are `localhost/...`: a pull, if one ever happens, goes
# to loopback and never to a registry host.
#
# Every image is cached by a key of all its inputs (this script, the Dockerfile, pyproject.toml,
# the copied source trees, the base's suite and packages) and rebuilt only when the
# key changes; an archive is published by a rename, so a half build never looks cached. The
# trainer image carries torch from PyPI with its CUDA libraries (several GB), hence the cache
# and the host's pip cache mounted into the build (torch is downloaded once per machine).
# buildah's storage is this cache's own (--root/--runroot under it), never the system's.
# Progress goes to stderr; stdout is only the lines above.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SCRIPT="$HERE/$(basename "$0")"
CACHE=${LBTRAIN_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lbtrain-images}
PIP_CACHE=${PIP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pip}
SUITE=bookworm
# Where Debian's packages come from: this machine's own apt sources (the machine reaches them
# already; a mirror or proxy set up for apt serves the base too), or the files named here.
host_apt_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    if [ -s "$f" ]; then echo "$f"; fi
  done
}
APT_SOURCES=${LBTRAIN_APT_SOURCES:-$(host_apt_sources)}
# python3-venv brings ensurepip (the virtualenvs' pip); ca-certificates lets pip reach PyPI
# over TLS; passwd (useradd, in minbase already) is named because the trainer's Dockerfile runs it.
PACKAGES=python3,python3-venv,ca-certificates,passwd
KEEP=${LBTRAIN_IMAGE_KEEP:-1}   # archives kept per image name (the newest): a trainer archive is ~7 GB

log() { echo "images: $*" >&2; }
die() { log "$*"; exit 2; }
need() { command -v "$1" >/dev/null || die "$1 is required but not on PATH ($2)"; }

need buildah "Debian: apt-get install buildah"
need mmdebstrap "Debian: apt-get install mmdebstrap"
need sha256sum "coreutils"
need flock "util-linux"
[ -n "$APT_SOURCES" ] || die "no apt sources found (/etc/apt/sources.list[.d]); name them in LBTRAIN_APT_SOURCES"

# --- keys -------------------------------------------------------------------------------------
# Files under the named folders, bytecode left out (as .dockerignore leaves it out of COPY),
# hashed with their paths, in a stable order.
tree_digest() {
  (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum)
}
short_hash() { sha256sum | cut -c1-16; }

base_key() {
  { echo "$SUITE $PACKAGES"; declare -f make_base; cat $APT_SOURCES; } | short_hash
}

image_key() {  # <dockerfile> <extra text> <source folders...>
  local dockerfile=$1 extra=$2; shift 2
  { echo "$extra"; base_key; cat "$SCRIPT" "$ROOT/$dockerfile" "$ROOT/.dockerignore";
    tree_digest pyproject.toml "$@"; } | short_hash
}

# --- storage ----------------------------------------------------------------------------------
bh() { buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver "$DRIVER" "$@"; }

# overlay where the kernel allows it (layers share files), else vfs (a full copy per layer).
pick_driver() {
  local driver
  for driver in ${LBTRAIN_BUILDAH_DRIVER:-overlay vfs}; do
    DRIVER=$driver STORE="$CACHE/storage-$driver"
    if bh from --name "lbtrain-probe-$$" scratch >/dev/null 2>&1 \
       && bh mount "lbtrain-probe-$$" >/dev/null 2>&1; then
      bh rm "lbtrain-probe-$$" >/dev/null 2>&1 || true
      log "buildah storage: $driver under $STORE"
      return 0
    fi
    bh rm "lbtrain-probe-$$" >/dev/null 2>&1 || true
    log "buildah storage driver $driver does not work here; trying the next"
  done
  die "no buildah storage driver works here (tried: ${LBTRAIN_BUILDAH_DRIVER:-overlay vfs})"
}

# Working containers and untagged intermediate images left by this build (or by a killed one:
# the storage is this cache's own and the lock is held, so nothing here belongs to anyone else).
tidy_storage() {
  bh rm --all >/dev/null 2>&1 || true
  bh rmi --prune >/dev/null 2>&1 || true
}

# --- the base: Debian bookworm from Debian's packages -----------------------------------------
make_base() {  # <ref>; the function's text is part of the base key
  local rootfs="$WORK/rootfs.tar" ctr
  log "making the Debian $SUITE base with mmdebstrap ($PACKAGES)"
  # Without manuals, docs (but their copyright files) and translations; without /dev (the
  # container runtime provides it, and an archive of device nodes cannot be unpacked unprivileged).
  mmdebstrap --variant=minbase --include="$PACKAGES" --skip=output/dev \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$SUITE" "$rootfs" $APT_SOURCES >&2
  ctr=$(bh from --name "lbtrain-base-$$" scratch)
  bh add "$ctr" "$rootfs" / >&2
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 \
    --label org.opencontainers.image.description="Debian $SUITE minbase + $PACKAGES (mmdebstrap)" \
    "$ctr" >&2
  bh commit --rm "$ctr" "$1" >&2
  rm -f "$rootfs"
}

ensure_base() {
  BASE_REF="localhost/lbtrain-base:$(base_key)"
  bh inspect --type image "$BASE_REF" >/dev/null 2>&1 && return 0
  local start=$SECONDS old
  make_base "$BASE_REF"
  log "base $BASE_REF made in $((SECONDS - start))s"
  # Older bases (other keys) are no longer wanted by any image built from here on.
  for old in $(bh images --noheading --format '{{.Name}}:{{.Tag}}' | grep '^localhost/lbtrain-base:'); do
    [ "$old" = "$BASE_REF" ] || bh rmi "$old" >/dev/null 2>&1 || true
  done
}

# --- the images -------------------------------------------------------------------------------
# A host whose TLS goes through an intercepting proxy names the CA bundle pip must trust in
# PIP_CERT (REQUESTS_CA_BUNDLE, SSL_CERT_FILE). The RUN steps see it mounted read-only over the
# base's own bundle (a path that exists, so no mount point is left in a layer) and pip is told
# to use it: nothing of the host's ends up in the image.
SYSTEM_CA=/etc/ssl/certs/ca-certificates.crt
host_ca_args() {
  local ca=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}}
  CA_ARGS=()
  if [ -n "$ca" ] && [ -f "$ca" ]; then
    log "pip in the build trusts $ca (PIP_CERT)"
    CA_ARGS=(--volume "$ca:$SYSTEM_CA:ro" --build-arg "PIP_CERT=$SYSTEM_CA")
  fi
}

archive_path() { echo "$CACHE/archives/$1-$2.tar"; }

# The example model-type plugin (examples/plugin-polygon) is built FROM the trainer image just
# built, exactly as a team builds its own: its Dockerfile installs the plugin and fails the build
# if the trainer's registry refuses it. What `lbtrain trainer types` says inside the result is
# kept beside the trainer's archive (tests/e2e/test_plugin_image.py reads it); the plugin image
# itself is not kept. Its folder is part of the trainer's key, so a change to it runs this again.
plugin_types_path() { echo "$CACHE/archives/lbtrain-trainer-$1.plugin-types.txt"; }
check_plugin_example() {  # <trainer ref> <trainer key>
  local ref="localhost/lbtrain-trainer-polygon:$2" ctr start=$SECONDS
  log "$ref: building examples/plugin-polygon/Dockerfile FROM $1"
  bh bud --isolation chroot --pull=never --force-rm --layers=false "${CA_ARGS[@]}" \
    --build-arg "TRAINER_IMAGE=$1" -f "$ROOT/examples/plugin-polygon/Dockerfile" -t "$ref" \
    "$ROOT/examples/plugin-polygon" >&2
  ctr=$(bh from --pull=never --name "lbtrain-polygon-$$" "$ref")
  bh run --isolation chroot "$ctr" -- lbtrain trainer types > "$WORK/plugin-types.txt"
  bh rm "$ctr" >/dev/null
  bh rmi "$ref" >/dev/null 2>&1 || true
  mv "$WORK/plugin-types.txt" "$(plugin_types_path "$2")"
  log "$ref: the plugin registers in the trainer image ($((SECONDS - start))s)"
}

# Keep the KEEP newest archives of one image name; the rest are gigabytes nobody will read.
prune_archives() {
  local name=$1
  find "$CACHE/archives" -maxdepth 1 -name "$name-????????????????.tar" -printf '%T@ %p\n' \
    | sort -rn | tail -n "+$((KEEP + 1))" | cut -d' ' -f2- | xargs -r rm -f
}

build_image() {  # <name> <dockerfile> <key> <build args...>
  local name=$1 dockerfile=$2 key=$3; shift 3
  local ref="localhost/$name:$key" archive tmp start=$SECONDS
  archive=$(archive_path "$name" "$key")
  if [ -f "$archive" ]; then
    log "$ref: cached ($archive)"
    RESULTS+=("$ref $archive")
    return 0
  fi
  ensure_base
  log "$ref: building $dockerfile on $BASE_REF"
  mkdir -p "$PIP_CACHE"
  # chroot isolation: no runc or new namespaces needed inside this sandbox; the RUN steps share
  # the host's network (pip reaches PyPI). --pull=never: every FROM is local.
  bh bud --isolation chroot --pull=never --force-rm --layers=false \
    --volume "$PIP_CACHE:/root/.cache/pip" --build-arg PIP_NO_CACHE_DIR= "${CA_ARGS[@]}" \
    "$@" -f "$ROOT/$dockerfile" -t "$ref" "$ROOT" >&2
  log "$ref: built in $((SECONDS - start))s; writing the docker-archive"
  if [ "$name" = lbtrain-trainer ]; then check_plugin_example "$ref" "$key"; fi
  tmp="$WORK/$name-$key.tar"   # same disk as the archives: the rename below is atomic
  bh push "$ref" "docker-archive:$tmp:$ref" >&2
  mv "$tmp" "$archive"   # atomic publish: a half-written archive never looks cached
  bh rmi "$ref" >/dev/null 2>&1 || true   # the archive is the product; storage keeps the base
  tidy_storage
  prune_archives "$name"
  log "$ref: $(du -h "$archive" | cut -f1) in $((SECONDS - start))s"
  RESULTS+=("$ref $archive")
}

main() {
  local wanted=("$@") name
  [ ${#wanted[@]} -gt 0 ] || wanted=(lbtrain trainer)
  for name in "${wanted[@]}"; do
    case $name in lbtrain|trainer) ;; *) die "unknown image '$name' (lbtrain, trainer)" ;; esac
  done
  mkdir -p "$CACHE/archives" "$CACHE/tmp"
  exec 9>"$CACHE/.lock"
  flock 9   # one build at a time per cache: they share the storage and the archives
  rm -rf "${CACHE:?}"/tmp/build.*   # a killed build's leftovers: the lock says nobody uses them
  WORK=$(mktemp -d "$CACHE/tmp/build.XXXXXX")
  export TMPDIR="$WORK"   # buildah's and pip's big temporary files stay in the cache's disk
  pick_driver
  tidy_storage   # containers a killed build left behind
  host_ca_args
  trap 'tidy_storage; rm -rf "$WORK"' EXIT
  RESULTS=()
  local start=$SECONDS
  for name in lbtrain trainer; do
    [[ " ${wanted[*]} " == *" $name "* ]] || continue
    case $name in
      lbtrain)
        build_image lbtrain images/lbtrain/Dockerfile \
          "$(image_key images/lbtrain/Dockerfile "" lbtrain operator/lbtrain_operator webhook/lbtrain_webhook)" \
          --build-arg "BASE=localhost/lbtrain-base:$(base_key)" ;;
      trainer)
        build_image lbtrain-trainer images/trainer/Dockerfile \
          "$(image_key images/trainer/Dockerfile "BAKE_WEIGHTS=stand-in" lbtrain images/trainer/lbtrain_trainer examples/plugin-polygon)" \
          --build-arg "TORCH_IMAGE=localhost/lbtrain-base:$(base_key)" --build-arg BAKE_WEIGHTS=stand-in ;;
    esac
  done
  log "done in $((SECONDS - start))s"
  printf '%s\n' "${RESULTS[@]}"
}

main "$@"
