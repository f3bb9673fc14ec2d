"""Store a downloaded image in the workspace: as it came when it can be, else shrunk.

Training reads any image PIL opens and converts it to RGB itself (``tasks/base.py``), so an image
that is already within ``max_image_side`` and is a JPEG or PNG is written as the bytes that
came (decoding and re-encoding it as JPEG q95 was most of the old export's CPU, and lost
quality). Only its header is parsed (by :func:`sniff`, a few struct reads: opening the image with
PIL for its size cost a tenth of the CPU of a small file's whole download), plus a check that
the file is complete (PNG's ``IEND``, JPEG's end-of-image marker); one that fails it is decoded
in full, which finds truncated files.
Anything else (larger, or another format) is decoded, converted to RGB and shrunk; a large JPEG
is decoded by libjpeg at 1/2, 1/4 or 1/8 scale (``Image.draft``) when that still covers the
target size, which saves most of the decode. The original width and height are always
returned: labels (boxes) are in original pixels.

Where the decoding runs: in the download threads. Pillow releases the GIL while it decodes,
resizes and encodes, so the threads decode on every core; a process pool measured the same on
2 cores for 4000x3000 JPEGs (11.0 against 11.1 files/s, CPU-bound either way) and adds a copy of
every download between processes. The caller bounds how many images decode at once (memory).
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lbtrain_trainer.fetcher import BrokenMediaError

# Formats stored as they came, and the suffix they get (MPO is a camera JPEG with extra frames
# after the first; PIL reads its first frame as a JPEG).
KEPT_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png"}
PNG_END = b"IEND\xaeB`\x82"
JPEG_END = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (they carry the size): C0-CF but DHT (C4), JPG (C8), DAC (CC).
JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length: TEM, RST0-7, SOI, EOI.
JPEG_BARE = frozenset({0x01, *range(0xD0, 0xDA)})


@dataclass(frozen=True)
class ImagePlan:
    action: Literal["keep", "shrink"]
    suffix: str
    size: tuple[int, int]  # what is stored


def target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size ``Image.thumbnail((max_side, max_side))`` gives: aspect kept, longest side at
    most ``max_side``, each side at least 1."""
    width, height = size
    if max(width, height) <= max_side:
        return size
    if width >= height:
        return max_side, max(1, round(height * max_side / width))
    return max(1, round(width * max_side / height)), max_side


def sniff(data: bytes) -> tuple[str, tuple[int, int]] | None:
    """("PNG" or "JPEG", (width, height)) from the header, or None when it is neither (or the
    header is damaged): then PIL decides. Reads only the header, as ``Image.open`` does."""
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return ("PNG", (width, height)) if width and height else None
    if not data.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in JPEG_BARE:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in JPEG_FRAMES:
            if pos + 9 > len(data) or length < 7:
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return ("JPEG", (width, height)) if width and height else None
        if length < 2:
            return None
        pos += 2 + length
    return None


def looks_complete(image_format: str, data: bytes) -> bool:
    """Whether the bytes end as a whole file of that format does (cheap truncation check)."""
    tail = data[-64:].rstrip(b"\0\r\n ")
    if image_format == "PNG":
        return tail.endswith(PNG_END)
    if image_format in ("JPEG", "MPO"):
        return tail.endswith(JPEG_END)
    return False


def plan_image(
    image_format: str | None, size: tuple[int, int], max_side: int, complete: bool, shrunk: str
) -> ImagePlan:
    """Keep the bytes, or decode and re-encode (with ``shrunk`` as the suffix)?"""
    kept_suffix = KEPT_FORMATS.get(image_format or "")
    if kept_suffix and complete and max(size) <= max_side:
        return ImagePlan("keep", kept_suffix, size)
    return ImagePlan("shrink", shrunk, target_size(size, max_side))


def shrunk_suffix(max_side: int) -> str:
    """Small models get lossless PNGs; larger images are stored as JPEG."""
    return ".png" if max_side <= 256 else ".jpg"


def _plan(image_format: str | None, size: tuple[int, int], data: bytes, max_side: int) -> ImagePlan:
    complete = looks_complete(image_format or "", data)
    return plan_image(image_format, size, max_side, complete, shrunk_suffix(max_side))


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (created or truncated) in three system calls: open, write,
    close. ``Path.write_bytes`` also makes ``fstat``, ``ioctl`` and ``lseek`` calls for the
    buffered file object it builds, and each call hands the GIL to another download thread."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _write_as_it_came(data: bytes, target_stem: Path, plan: ImagePlan) -> tuple[str, int, int]:
    target = target_stem.with_name(target_stem.name + plan.suffix)
    write_file(target, data)
    return target.name, plan.size[0], plan.size[1]


def store_image(
    data: bytes,
    target_stem: Path,
    max_side: int,
    decode_slot: contextlib.AbstractContextManager[object] | None = None,
) -> tuple[str, int, int]:
    """Write the image next to ``target_stem`` (its suffix added); return (file name, original
    width, original height). Raises :class:`BrokenMediaError` if it does not decode.
    ``decode_slot`` is held while an image is decoded and re-encoded (bounds memory)."""
    sniffed = sniff(data)
    if sniffed is not None:
        plan = _plan(sniffed[0], sniffed[1], data, max_side)
        if plan.action == "keep":
            return _write_as_it_came(data, target_stem, plan)
    from PIL import Image, UnidentifiedImageError

    undecodable = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)
    try:
        image = Image.open(io.BytesIO(data))
    except undecodable as exc:
        raise BrokenMediaError(f"not a decodable image: {exc}") from exc
    with image:
        size = image.size
        plan = _plan(image.format, size, data, max_side)
        if plan.action == "keep":
            return _write_as_it_came(data, target_stem, plan)
        target = target_stem.with_name(target_stem.name + plan.suffix)
        with decode_slot or contextlib.nullcontext():
            try:
                if image.format in ("JPEG", "MPO") and plan.size != size:
                    image.draft("RGB", plan.size)  # libjpeg scales by 1/2..1/8 while decoding
                rgb = image.convert("RGB")
            except undecodable as exc:
                raise BrokenMediaError(f"not a decodable image: {exc}") from exc
            if rgb.size != plan.size:
                rgb = rgb.resize(plan.size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            if plan.suffix == ".jpg":
                rgb.save(target, format="JPEG", quality=95)
            else:
                rgb.save(target, format="PNG")
    return target.name, size[0], size[1]
