"""Finding lbtrain's container images: build them (or find them cached) with images/build.sh.

The real-node tests run the project's own images, imported into the node's containerd from
docker-archives, because no registry is reachable there. images/build.sh makes them with buildah
on a Debian base built from Debian's packages and caches them by a key of their inputs; this
module runs it and reads its answer (one `<ref> <archive>` line per image, in a fixed order).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lbtrain_dev.source import run_build_script


@dataclass(frozen=True)
class BuiltImage:
    """One image: the name it has inside its archive and the docker-archive holding it."""

    ref: str
    archive: Path


@dataclass(frozen=True)
class ImageSet:
    """lbtrain's two images: `lbtrain` runs the webhook and the operator, `trainer` the Jobs."""

    lbtrain: BuiltImage
    trainer: BuiltImage


def parse_built(stdout: str) -> ImageSet:
    """build.sh's stdout: the lbtrain image's line, then the trainer's; anything else is a bug."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if len(lines) != 2:
        raise RuntimeError(f"images/build.sh printed {len(lines)} lines, expected 2: {stdout!r}")
    lbtrain, trainer = (_parse_line(line) for line in lines)
    return ImageSet(lbtrain=lbtrain, trainer=trainer)


def _parse_line(line: str) -> BuiltImage:
    ref, sep, archive = line.strip().partition(" ")
    if not sep or not Path(archive).is_absolute():
        raise RuntimeError(f"images/build.sh printed {line!r}, expected '<ref> <absolute path>'")
    return BuiltImage(ref=ref, archive=Path(archive))


def ensure_images(*, quiet: bool = False) -> ImageSet:
    """Both images as docker-archives; builds them on first use (the trainer: many minutes, it
    carries torch with its CUDA libraries), then answers from the cache in seconds.

    `LBTRAIN_IMAGE_CACHE` moves the cache. Build progress streams to stderr so a long first
    run is visibly alive; `quiet` drops it.
    """
    images = parse_built(run_build_script("images/build.sh", quiet=quiet))
    for image in (images.lbtrain, images.trainer):
        if not image.archive.is_file():
            raise RuntimeError(f"images/build.sh named {image.archive}, which does not exist")
    return images
