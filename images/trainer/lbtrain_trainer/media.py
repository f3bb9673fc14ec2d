"""Fetch the media of the export's data rows into the workspace.

Labelbox exports reference media by URL (signed storage URLs, fetched without auth), or hold
text inline. The export stage downloads every row's media once, with bounded concurrency and
retries, so training never touches the network. Images are decoded and pre-shrunk to the
longest side the model can use (boxes stay in original pixels; the original size is kept), and
text is stored as UTF-8. A row whose media is missing or undecodable is recorded as broken with
the reason; :mod:`lbtrain_trainer.prepare` turns that into a bad-input error naming the rows,
while a server that keeps failing (5xx, timeouts) is a transient error and fails the stage.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

URL_SCHEMES = ("http://", "https://", "data:", "file://")
INDEX_NAME = "index.json"
TIMEOUT_S = 30.0


class TransientMediaError(Exception):
    """The media server failed in a way that may go away (5xx, 429, network errors)."""


class BrokenMediaError(Exception):
    """The media cannot be used (4xx, undecodable image, not UTF-8 text)."""


@dataclass(frozen=True)
class MediaEntry:
    path: str | None = None  # relative to the media directory
    width: int | None = None  # original size (images)
    height: int | None = None
    error: str | None = None


def is_reference(row_data: str) -> bool:
    return row_data.startswith(URL_SCHEMES)


def _filename(data_row_id: str, suffix: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", data_row_id)[:80]
    digest = hashlib.sha256(data_row_id.encode()).hexdigest()[:8]
    return f"{safe}-{digest}{suffix}"


def fetch_bytes(url: str, attempts: int = 4, backoff_s: float = 0.5) -> bytes:
    """Get the bytes of a URL; retry transient failures, raise BrokenMediaError for 4xx."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if header.endswith(";base64"):
            return base64.b64decode(payload)
        return urllib.parse.unquote_to_bytes(payload)
    if url.startswith("file://"):
        try:
            return Path(urllib.parse.urlparse(url).path).read_bytes()
        except OSError as exc:
            raise BrokenMediaError(str(exc)) from exc
    import requests

    last: Exception | None = None
    for attempt in range(attempts):
        try:
            response = requests.get(url, timeout=TIMEOUT_S)
            if response.status_code < 400:
                return response.content
            if response.status_code != 429 and response.status_code < 500:
                raise BrokenMediaError(f"HTTP {response.status_code}")
            last = TransientMediaError(f"HTTP {response.status_code}")
        except requests.RequestException as exc:
            last = TransientMediaError(f"{type(exc).__name__}: {exc}")
        if attempt + 1 < attempts:
            time.sleep(backoff_s * 2**attempt)
    assert last is not None
    raise last


def store_image(data: bytes, target: Path, max_side: int) -> tuple[int, int]:
    """Decode, convert to RGB, shrink to ``max_side``; return the original (width, height)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BrokenMediaError(f"not a decodable image: {exc}") from exc
    if max(width, height) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    if target.suffix == ".jpg":
        rgb.save(target, format="JPEG", quality=95)
    else:
        rgb.save(target, format="PNG")
    return width, height


def store_text(data: bytes, target: Path) -> None:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BrokenMediaError(f"text is not UTF-8: {exc}") from exc
    target.write_text(text, encoding="utf-8")


def _fetch_one(
    data_row_id: str, row_data: str, kind: str, media_dir: Path, max_side: int
) -> MediaEntry:
    if not row_data:
        return MediaEntry(error="data row has no row_data")
    if kind == "text":
        name = _filename(data_row_id, ".txt")
        data = fetch_bytes(row_data) if is_reference(row_data) else row_data.encode()
        store_text(data, media_dir / name)
        return MediaEntry(path=name)
    if not is_reference(row_data):
        return MediaEntry(error="row_data is not a URL")
    name = _filename(data_row_id, ".png" if max_side <= 256 else ".jpg")
    width, height = store_image(fetch_bytes(row_data), media_dir / name, max_side)
    return MediaEntry(path=name, width=width, height=height)


def load_index(media_dir: Path) -> dict[str, MediaEntry]:
    path = media_dir / INDEX_NAME
    if not path.exists():
        return {}
    raw: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return {k: MediaEntry(**v) for k, v in raw.items()}


def download_all(
    items: Iterable[tuple[str, str]],
    kind: str,
    media_dir: Path,
    *,
    max_side: int,
    concurrency: int,
    fetch: Callable[[str, str, str, Path, int], MediaEntry] = _fetch_one,
) -> dict[str, MediaEntry]:
    """Fetch ``(data_row_id, row_data)`` media; ``kind`` is "image" or "text".

    Rows already fetched by an earlier attempt (same workspace) are kept. Broken media are
    recorded per row; a transient failure that survives the retries is raised.
    """
    media_dir.mkdir(parents=True, exist_ok=True)
    index = {
        k: v
        for k, v in load_index(media_dir).items()
        if v.error is None and v.path and (media_dir / v.path).exists()
    }
    todo = [(row_id, data) for row_id, data in items if row_id not in index]

    def work(item: tuple[str, str]) -> tuple[str, MediaEntry]:
        row_id, data = item
        try:
            return row_id, fetch(row_id, data, kind, media_dir, max_side)
        except BrokenMediaError as exc:
            return row_id, MediaEntry(error=str(exc)[:200])

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for row_id, entry in pool.map(work, todo):
            index[row_id] = entry
    (media_dir / INDEX_NAME).write_text(json.dumps({k: asdict(v) for k, v in index.items()}))
    broken = sum(1 for v in index.values() if v.error)
    log.info(
        "media: %d fetched, %d kept from an earlier attempt, %d broken",
        len(todo),
        len(index) - len(todo),
        broken,
    )
    return index
