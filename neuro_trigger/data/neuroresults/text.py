"""The text of a neuroresults file: plain or gzip (every member inflated, isal if installed), in pieces of
a few megabytes, in line-aligned blocks for the parsing threads, and the bounds of its lines."""
from __future__ import annotations

import gzip
import io
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

try:
    from isal import isal_zlib as _inflate
except ImportError:  # isal is in requirements.txt; zlib gives the same result, slower
    _inflate = zlib

from neuro_trigger.data.neuroresults.format import DataFormatError

_GZIP_MAGIC = b"\x1f\x8b"
_MAX_HEADER_BYTES = 1 << 16
_PIECE_BYTES = 1 << 20  # read or inflated at a time
_BLOCK_BYTES = 32 << 20  # text per parsing task: about 100,000 rows (smaller blocks scale worse)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataFormatError(path, None, "file not found")
    if path.is_dir():
        raise DataFormatError(path, None, "is a directory, expected a neuroresults file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise DataFormatError(path, None, f"cannot open: {exc.strerror or exc}") from None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == _GZIP_MAGIC:
        return True
    if path.suffix == ".gz" and magic:
        raise DataFormatError(path, 1, "not gzip data although the name ends in .gz")
    return False


class _TextBlock(io.RawIOBase):
    """Pieces of text read as one file, without joining them into one buffer (pandas reads 256 kB at
    a time, in the parsing thread: the copy is spread over the threads instead of the inflating one)."""

    def __init__(self, parts: list[bytes | memoryview]) -> None:
        super().__init__()
        self.parts = deque(memoryview(part) for part in parts)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self.parts:
            return 0
        part = self.parts[0]
        n = min(len(buffer), len(part))
        buffer[:n] = part[:n]
        if n == len(part):
            self.parts.popleft()
        else:
            self.parts[0] = part[n:]
        return n


class _GzipStreamError(Exception):
    """The gzip stream broke off."""


def _text_pieces(path: Path, gz: bool, skip_lines: int) -> Iterator[bytes]:
    """The file's text after its first `skip_lines` lines, in pieces of a few megabytes."""
    pieces = _inflated_pieces(path) if gz else _read_pieces(path)
    for piece in pieces:
        while skip_lines and piece:
            end = piece.find(b"\n")
            if end < 0:
                piece = b""
                break
            piece = piece[end + 1:]
            skip_lines -= 1
        if piece:
            yield piece


def _read_pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as source:
        while piece := source.read(_PIECE_BYTES):
            yield piece


def _inflated_pieces(path: Path) -> Iterator[bytes]:
    """Inflate every gzip member of the file (isal if installed: 2-3x zlib's speed; both release the GIL)."""
    try:
        with open(path, "rb") as source:
            yield from _gunzip(iter(lambda: source.read(_PIECE_BYTES // 4), b""))
    except (_inflate.error, zlib.error, EOFError) as exc:
        raise _GzipStreamError(str(exc) or type(exc).__name__) from None


def _gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The inflated data of every gzip member in `chunks` (the raw bytes in order).

    Zero bytes after a member are padding (tape archives write it; `gzip -t` accepts it) and are skipped;
    anything else after a member must be the next member. Raises EOFError if the data end inside a member.
    """
    inflater = _inflate.decompressobj(wbits=31)
    between = False  # after the end of a member: padding or the next member may follow
    for chunk in chunks:
        while chunk:
            if between:
                chunk = chunk.lstrip(b"\0")
                if not chunk:
                    break
                inflater = _inflate.decompressobj(wbits=31)
                between = False
            yield inflater.decompress(chunk)
            chunk = b""
            if inflater.eof:
                between = True
                chunk = inflater.unused_data
    if not between:
        raise EOFError("compressed data ends before the end-of-stream marker")


def _blocks(pieces: Iterator[bytes], header: bytes) -> Iterator[list[bytes | memoryview]]:
    """The header followed by whole lines, about _BLOCK_BYTES each, as a list of parts (not copied)."""
    held: list[bytes | memoryview] = []
    size = 0
    for piece in pieces:
        held.append(piece)
        size += len(piece)
        if size < _BLOCK_BYTES:
            continue
        cut = piece.rfind(b"\n") + 1
        if cut == 0:
            continue  # a line longer than the block: keep collecting
        view = memoryview(piece)
        held[-1] = view[:cut]
        yield [header, *held]
        held = [view[cut:]] if cut < len(piece) else []
        size = len(held[0]) if held else 0
    if size:
        yield [header, *held]



def _first_two_lines(path: Path, gz: bool) -> tuple[bytes, bytes]:
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as handle:
            header = handle.readline(_MAX_HEADER_BYTES)
            line2 = handle.readline(_MAX_HEADER_BYTES) if header.endswith(b"\n") else b""
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(path, 1, f"truncated or corrupt gzip data ({exc})") from None
    if header == b"":
        raise DataFormatError(path, 1, "empty file")
    if len(header) >= _MAX_HEADER_BYTES and not header.endswith(b"\n"):
        raise DataFormatError(path, 1, "line 1 is not a neuroresults header (too long)")
    return header, line2

def _read_text(path: Path, gz: bool) -> tuple[bytes, Exception | None]:
    """The whole decompressed file, and the gzip error if it could not be inflated to the end."""
    raw = path.read_bytes()
    if not gz:
        return raw, None
    parts: list[bytes] = []
    try:
        for part in _gunzip([raw]):
            parts.append(part)
    except (_inflate.error, zlib.error, EOFError) as exc:
        return b"".join(parts), exc
    return b"".join(parts), None


def _line_bounds(text: bytes, count_fields: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Start, end (without the line break) and, if asked, field count of every line, vectorised."""
    buf = np.frombuffer(text, dtype=np.uint8)
    breaks = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(buf)]))
    if text.endswith(b"\n"):
        starts, ends = starts[:-1], ends[:-1]
    carriage = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
    ends = ends - carriage
    if not count_fields:
        return starts, ends, None
    tabs = np.flatnonzero(buf == 9)
    fields = np.searchsorted(tabs, ends) - np.searchsorted(tabs, starts) + 1
    fields[ends == starts] = 0
    return starts, ends, fields

