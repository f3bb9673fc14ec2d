"""The example model-type plugin, built as a team builds its own: `images/build.sh` builds
examples/plugin-polygon/Dockerfile FROM the trainer image it just made, and keeps what
`lbtrain trainer types` printed inside the result beside the trainer's archive."""

from __future__ import annotations

from lbtrain.contract import MODEL_TYPES
from lbtrain_dev.images import ImageSet


def test_the_plugin_image_lists_polygon_from_its_distribution(images: ImageSet) -> None:
    archive = images.trainer.archive
    key = archive.stem.removeprefix("lbtrain-trainer-")
    listing = archive.with_name(f"lbtrain-trainer-{key}.plugin-types.txt")
    assert listing.is_file(), f"images/build.sh left no {listing.name} beside {archive.name}"
    rows = {line.split()[0]: line.split() for line in listing.read_text().splitlines() if line}
    assert set(rows) == set(MODEL_TYPES) | {"polygon"}
    assert rows["polygon"][1:3] == ["lbtrain-polygon", "0.1.0"]
    assert all(rows[t][1] == "built-in" for t in MODEL_TYPES)
