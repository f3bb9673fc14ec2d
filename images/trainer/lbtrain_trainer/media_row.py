"""One data row's media: read its URI, fetch it, store it in the workspace.

What a download thread (in the stage's process or a download process,
:mod:`lbtrain_trainer.media_processes`) does with each row; :mod:`lbtrain_trainer.media`
decides which rows and records the outcome. Only ``http(s)://`` and ``data:`` are read: any
other URI (``gs://`` and ``s3://`` from delegated-access buckets, ``file://``) is a broken row
whose error names the URI, never text to train on (a ``gs://`` text row used to be trained on as
its own 30-character URL). Errors name the URL without its query (signed URLs carry their
signature there).
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from lbtrain_trainer.fetcher import BrokenMediaError, Fetcher, redact_url
from lbtrain_trainer.imagestore import store_image
from lbtrain_trainer.media_index import MediaEntry

URL_SCHEMES = ("http://", "https://", "data:")
URI_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Why a URI the trainer does not read is not read, by scheme (anything else: the generic one).
UNREAD_SCHEMES = {
    "gs": "a Google Cloud Storage URI (IAM delegated access): the trainer has no GCS "
    "credentials; serve the data rows through signed https:// URLs",
    "s3": "an Amazon S3 URI: the trainer has no S3 credentials; serve the data rows "
    "through signed https:// URLs",
    "file": "a file:// URL: refused, it would read the trainer's own disk",
}
UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9_.-]")


def is_reference(row_data: str) -> bool:
    return row_data.startswith(URL_SCHEMES)


def unreadable_uri(row_data: str) -> str | None:
    """Why ``row_data``, a URI the trainer does not read, cannot be used (None: it is a URL
    the fetcher reads, or inline text)."""
    if is_reference(row_data) or not URI_LIKE.match(row_data):
        return None
    scheme = row_data.split(":", 1)[0].lower()
    return UNREAD_SCHEMES.get(
        scheme, f"a {scheme}:// URI: the trainer reads only http(s):// and data: URLs"
    )


def media_error(row_data: str, exc: BaseException) -> str:
    """A broken row's error: what went wrong, and the URL (without its query) it came from."""
    if URI_LIKE.match(row_data) or row_data.startswith("data:"):
        return f"{exc} ({redact_url(row_data)})"[:400]
    return str(exc)[:400]


def file_stem(data_row_id: str) -> str:
    """A file name (without suffix) for a data row: readable, safe, and unique."""
    safe = UNSAFE_IN_NAMES.sub("_", data_row_id[:80])
    digest = hashlib.sha256(data_row_id.encode()).hexdigest()[:8]
    return f"{safe}-{digest}"


def store_text(data: bytes, target: Path) -> None:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BrokenMediaError(f"text is not UTF-8: {exc}") from exc
    # Byte-faithful: "\r\n" stays two characters, as Labelbox counts entity offsets.
    target.write_text(text, encoding="utf-8", newline="")


def read_media_text(path: Path) -> str:
    """A stored text as Labelbox counts it: no newline translation (``Path.read_text`` would
    turn "\r\n" into "\n" and shift every entity after it)."""
    with path.open(encoding="utf-8", newline="") as handle:
        return handle.read()


@dataclass
class RowFetch:
    """What fetching one row's media needs; shared by the download threads of a process."""

    kind: str  # "image" or "text"
    media_dir: Path
    max_side: int
    fetcher: Fetcher
    decode_slots: threading.BoundedSemaphore

    def outcome(self, data_row_id: str, row_data: str) -> tuple[MediaEntry, int]:
        """:meth:`fetch_one`, a broken row recorded as its error; anything else (transient,
        or a bug) is raised: it fails the stage."""
        try:
            return self.fetch_one(data_row_id, row_data)
        except BrokenMediaError as exc:
            return MediaEntry(error=media_error(row_data, exc)), 0

    def fetch_one(self, data_row_id: str, row_data: str) -> tuple[MediaEntry, int]:
        """Fetch and store one row's media; returns its entry and the bytes downloaded."""
        if not row_data:
            return MediaEntry(error="data row has no row_data"), 0
        unread = unreadable_uri(row_data)
        if unread is not None:
            raise BrokenMediaError(f"row_data is {unread}")
        stem = file_stem(data_row_id)
        if self.kind == "text":
            name = stem + ".txt"
            data = self.fetcher.get(row_data) if is_reference(row_data) else row_data.encode()
            store_text(data, self.media_dir / name)
            return MediaEntry(path=name), len(data)
        if not is_reference(row_data):
            return MediaEntry(error="row_data is not a URL"), 0
        data = self.fetcher.get(row_data)
        name, width, height = store_image(
            data, self.media_dir / stem, self.max_side, self.decode_slots
        )
        return MediaEntry(path=name, width=width, height=height), len(data)
