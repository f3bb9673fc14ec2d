"""The artifact destination rule (lbtrain.destination): a run's folder never leaves its root."""

from __future__ import annotations

import pytest

from lbtrain.destination import DestinationEscapes, Expanded, check_confined, expand, join

RUN = "ckx0run000000000000000001"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("/artifacts/{modelRunId}", Expanded(f"/artifacts/{RUN}", "/artifacts")),
        ("/artifacts/{modelRunId}/", Expanded(f"/artifacts/{RUN}/", "/artifacts")),
        ("/a/b/run-{modelRunId}/w", Expanded(f"/a/b/run-{RUN}/w", "/a/b")),
        ("s3://models/runs/{modelRunId}", Expanded(f"s3://models/runs/{RUN}", "s3://models/runs")),
        ("gs://models/{modelRunId}", Expanded(f"gs://models/{RUN}", "gs://models")),
        ("file:///data/{modelRunId}", Expanded(f"file:///data/{RUN}", "file:///data")),
        ("/shared/weights", Expanded("/shared/weights", "/shared/weights")),  # every run here
        (None, Expanded("/workspace/artifacts", "/workspace/artifacts")),
        ("", Expanded("/workspace/artifacts", "/workspace/artifacts")),
    ],
)
def test_destinations_that_stay_under_their_root(template: str | None, expected: Expanded) -> None:
    assert expand(template, RUN) == expected
    check_confined(expected.destination, expected.root)  # what the trainer checks again


@pytest.mark.parametrize(
    ("template", "run_id", "why"),
    [
        ("/artifacts/{modelRunId}", "../../etc", "is not one path segment"),
        ("/artifacts/{modelRunId}", "..", "is not one path segment"),
        ("/artifacts/{modelRunId}", "a/b", "is not one path segment"),
        ("/artifacts/{modelRunId}", "", "is not one path segment"),
        ("/artifacts/../etc/{modelRunId}", RUN, "'..' path segment"),
        ("/artifacts/{modelRunId}/../../x", RUN, "'..' path segment"),
        ("/shared/../etc", RUN, "'..' path segment"),
        ("s3://{modelRunId}/weights", RUN, "would pick the bucket"),
        ("{modelRunId}", RUN, "is not an absolute path or a bucket URI"),
        ("artifacts/{modelRunId}", RUN, "is not an absolute path or a bucket URI"),
    ],
)
def test_destinations_that_would_escape(template: str, run_id: str, why: str) -> None:
    with pytest.raises(DestinationEscapes, match=why):
        expand(template, run_id)


@pytest.mark.parametrize(
    ("destination", "root"),
    [
        ("/artifacts-evil/x", "/artifacts"),  # a prefix of the text is not a parent folder
        ("/etc", "/artifacts"),
        ("/artifacts/../etc", "/artifacts"),
        ("s3://other/runs/x", "s3://models/runs"),
        ("/models/runs/x", "s3://models/runs"),
        ("/artifacts/x", "artifacts"),
    ],
)
def test_the_trainer_s_check_refuses_what_is_not_under_the_root(
    destination: str, root: str
) -> None:
    with pytest.raises(DestinationEscapes):
        check_confined(destination, root)


def test_join_keeps_files_inside() -> None:
    assert join("/a/run", "ckpt/last.pt") == "/a/run/ckpt/last.pt"
    assert join("s3://b/runs/r", "last.pt") == "s3://b/runs/r/last.pt"
    for climbing in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(DestinationEscapes, match="outside it"):
            join("/a/run", climbing)
