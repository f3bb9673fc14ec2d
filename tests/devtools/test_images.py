"""images/build.sh's contract with its callers, without building anything (a build takes many
minutes): the stdout lines lbtrain_dev.images reads, and the error a machine without the
build tools gets."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lbtrain_dev.images import BuiltImage, ImageSet, parse_built
from lbtrain_dev.source import repo_root


def test_parse_built_reads_one_line_per_image_in_order() -> None:
    out = (
        "localhost/lbtrain:0123456789abcdef /c/archives/lbtrain-0123456789abcdef.tar\n"
        "localhost/lbtrain-trainer:fedcba9876543210 /c/archives/t.tar\n"
    )
    assert parse_built(out) == ImageSet(
        lbtrain=BuiltImage(
            "localhost/lbtrain:0123456789abcdef",
            Path("/c/archives/lbtrain-0123456789abcdef.tar"),
        ),
        trainer=BuiltImage("localhost/lbtrain-trainer:fedcba9876543210", Path("/c/archives/t.tar")),
    )


@pytest.mark.parametrize(
    "out",
    [
        "",
        "localhost/lbtrain:1 /a.tar\n",
        "localhost/lbtrain:1 /a.tar\nlocalhost/lbtrain-trainer:1 relative.tar\n",
        "localhost/lbtrain:1\nlocalhost/lbtrain-trainer:1 /b.tar\n",
    ],
)
def test_parse_built_refuses_anything_else(out: str) -> None:
    with pytest.raises(RuntimeError, match=r"images/build\.sh printed"):
        parse_built(out)


def test_build_names_the_missing_tool(tmp_path: Path) -> None:
    """Only what the script needs before its checks is on PATH: buildah is missing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "basename"):
        (bin_dir / tool).symlink_to(f"/usr/bin/{tool}")
    result = subprocess.run(
        ["/bin/bash", str(repo_root() / "images" / "build.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(bin_dir), "LBTRAIN_IMAGE_CACHE": str(tmp_path / "c")},
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "buildah is required" in result.stderr
    assert not (tmp_path / "c").exists()
