"""Finding lbtrain's container images: build them (or find them cached) with images/build.sh.

The real-node tests run the project's own images, imported into the node's containerd from
docker-archives, because no registry is reachable there. images/build.sh makes them with buildah
on a Debian base built from Debian's packages and caches them by a key of their inputs; this
module runs it and reads its answer (one `<ref> <archive>` line per image, in a fixed order).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


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


def repo_root() -> Path:
    """The checkout this package runs from; the images are built from the source tree.

    This file is devtools/lbtrain_dev/images.py, two folders below the root.
    """
    return Path(__file__).resolve().parents[2]


def build_script() -> Path:
    return repo_root() / "images" / "build.sh"


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
    script = build_script()
    if not script.exists():
        raise FileNotFoundError(f"{script} not found: the images need a source checkout")
    result = subprocess.run(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{script} failed with exit code {result.returncode} (see its output above)"
        )
    images = parse_built(result.stdout)
    for image in (images.lbtrain, images.trainer):
        if not image.archive.is_file():
            raise RuntimeError(f"images/build.sh named {image.archive}, which does not exist")
    return images
