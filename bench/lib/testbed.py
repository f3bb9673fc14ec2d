"""A testbed control plane for one bench run: etcd, kube-apiserver, kube-controller-manager.

Built (or found in the cache) by `ensure_binaries`, started in a temporary folder (or `keep`,
whose logs then stay for a post-mortem), the lbtrain CRDs installed and Established, and stopped
when the block ends, even when the bench fails: a bench never leaves a control plane behind.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed.binaries import ensure_binaries

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def control_plane(
    keep: Path | None = None, *, prefix: str = "lbtrain-bench-"
) -> Iterator[ControlPlane]:
    """A started control plane with the CRDs installed; `plane.state.pids` names its processes."""
    bin_dir = ensure_binaries()
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    folder = (
        contextlib.nullcontext(str(keep)) if keep else tempfile.TemporaryDirectory(prefix=prefix)
    )
    with folder as run_dir:
        plane = ControlPlane(bin_dir, Path(run_dir))
        plane.start(die_with_parent=True)
        try:
            plane.install_crds(REPO / "crds")
            yield plane
        finally:
            plane.stop()
