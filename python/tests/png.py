"""Read the pixels of a PNG with zlib and numpy, no imaging library.

Enough for the screenshots headless Chromium writes: 8-bit RGB or RGBA,
not interlaced. Rows filtered None, Sub or Up are undone with numpy; Average
and Paeth depend on the pixel to their left, so they are undone byte by byte.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {2: 3, 6: 4}  # colour type -> bytes per pixel at 8 bits


def read_png(path: Path) -> np.ndarray:
    """The image as an array of shape (height, width, channels), dtype uint8."""
    data = path.read_bytes()
    if not data.startswith(SIGNATURE):
        raise ValueError(f"{path}: not a PNG")
    width = height = bpp = 0
    compressed = bytearray()
    position = len(SIGNATURE)
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in CHANNELS or interlace:
                raise ValueError(f"{path}: unsupported PNG (depth {depth}, colour {colour}, interlace {interlace})")
            bpp = CHANNELS[colour]
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
    raw = np.frombuffer(zlib.decompress(bytes(compressed)), dtype=np.uint8).reshape(height, 1 + width * bpp)
    pixels = np.zeros((height, width * bpp), dtype=np.uint8)
    previous = np.zeros(width * bpp, dtype=np.uint8)
    for y in range(height):
        pixels[y] = _unfilter(int(raw[y, 0]), raw[y, 1:], previous, bpp)
        previous = pixels[y]
    return pixels.reshape(height, width, bpp)


def _unfilter(kind: int, row: np.ndarray, previous: np.ndarray, bpp: int) -> np.ndarray:
    if kind == 0:
        return row
    if kind == 1:  # Sub: a running sum per channel, modulo 256
        return np.cumsum(row.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
    if kind == 2:  # Up
        return row + previous
    if kind in (3, 4):
        return np.array(_sequential(kind, row.tolist(), previous.tolist(), bpp), dtype=np.uint8)
    raise ValueError(f"unknown PNG filter type {kind}")


def _sequential(kind: int, row: list[int], above: list[int], bpp: int) -> list[int]:
    out = [0] * len(row)
    for i, value in enumerate(row):
        left = out[i - bpp] if i >= bpp else 0
        up = above[i]
        if kind == 3:  # Average
            out[i] = (value + (left + up) // 2) & 0xFF
            continue
        upper_left = above[i - bpp] if i >= bpp else 0  # Paeth
        estimate = left + up - upper_left
        da, db, dc = abs(estimate - left), abs(estimate - up), abs(estimate - upper_left)
        predictor = left if da <= db and da <= dc else (up if db <= dc else upper_left)
        out[i] = (value + predictor) & 0xFF
    return out
