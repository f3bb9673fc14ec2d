"""The layout of the workspace volume the three stage containers share.

One place names every file a stage leaves for the next, so a stage can tell whether its
predecessor ran (and say so clearly) and a restarted container can reuse finished work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lbtrain_trainer.errors import ConfigError


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def export_file(self) -> Path:
        return self.root / "export.ndjson"

    @property
    def hyperparameters_file(self) -> Path:
        return self.root / "hyperparameters.json"

    @property
    def splits_file(self) -> Path:
        """Each data row's split and its source (:class:`lbtrain_trainer.splits.SplitPlan`)."""
        return self.root / "splits.json"

    @property
    def features_file(self) -> Path:
        """Feature and answer names → schema ids, from the export (:mod:`.features`)."""
        return self.root / "features.json"

    @property
    def media_dir(self) -> Path:
        return self.root / "media"

    @property
    def prepared_dir(self) -> Path:
        return self.root / "prepared"

    @property
    def dataset_file(self) -> Path:
        return self.prepared_dir / "dataset.json"

    @property
    def tokenizer_file(self) -> Path:
        return self.prepared_dir / "tokenizer.json"

    @property
    def export_summary_file(self) -> Path:
        """The export stage's summary, kept in a multi-pod run (:mod:`.shared_prepare`)."""
        return self.root / "export-summary.json"

    @property
    def prepare_summary_file(self) -> Path:
        """The prepare stage's summary, kept in a multi-pod run (:mod:`.shared_prepare`)."""
        return self.prepared_dir / "summary.json"

    @property
    def bundle_marker_file(self) -> Path:
        """The marker of the bundle this workspace was unpacked from (:mod:`.shared_prepare`)."""
        return self.root / "bundle.json"

    @property
    def scratch_dir(self) -> Path:
        return self.root / "scratch"

    def require(self, path: Path, stage: str) -> Path:
        if not path.exists():
            raise ConfigError(f"{path} is missing: run the {stage} stage first")
        return path
