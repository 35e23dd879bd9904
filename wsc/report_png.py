"""`wsc report --png`: a static image of the mesh view, no browser needed.

Kernels are filled with their kind's colour (outlined when PEs are big enough to show it) and
the routes' link loads are drawn on top as a heat map, in the page's colours. The image has
`pixels_per_pe(W, H)` pixels per PE on each side, so a small test mesh is still legible and
wse3's 755x1170 mesh is drawn at one pixel per PE. Written with numpy and zlib only.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from wsc.report_data import KIND_COLORS, OTHER_COLOR

TARGET_PX = 1024  # the long side of the image, for meshes smaller than this
MESH_BG = (228, 231, 235)
LINK_STOPS = np.array([[13, 8, 135], [106, 0, 168], [177, 42, 144], [225, 100, 98], [252, 166, 54]], float)


def pixels_per_pe(width: int, height: int) -> int:
    return max(1, TARGET_PX // max(width, height))


def _rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _ramp(t: float) -> np.ndarray:
    t = min(1.0, max(0.0, t)) * (len(LINK_STOPS) - 1)
    i = min(int(t), len(LINK_STOPS) - 2)
    return LINK_STOPS[i] + (LINK_STOPS[i + 1] - LINK_STOPS[i]) * (t - i)


def render_mesh(data: dict) -> np.ndarray:
    """The mesh view as an `[H*p, W*p, 3]` uint8 image (p = pixels per PE)."""
    W, H = data["meta"]["width"], data["meta"]["height"]
    p = pixels_per_pe(W, H)
    img = np.empty((H * p, W * p, 3), np.uint8)
    img[:] = MESH_BG
    routes = bool(data["links"])
    for k in data["kernels"]:
        color = np.array(_rgb(KIND_COLORS.get(k["kind"], OTHER_COLOR)), float)
        if routes:  # faded, as on the page, so the heat map reads on top
            color = 0.55 * color + 0.45 * np.array(MESH_BG, float)
        y0, x0, y1, x1 = k["y"] * p, k["x"] * p, (k["y"] + k["rows"]) * p, (k["x"] + k["cols"]) * p
        img[y0:y1, x0:x1] = color.astype(np.uint8)
        if p >= 3 or (k["rows"] >= 8 and k["cols"] >= 8):  # outline
            dark = (color * 0.45).astype(np.uint8)
            img[y0:y1, [x0, x1 - 1]] = dark
            img[[y0, y1 - 1], x0:x1] = dark
    links = data["links"]
    loads = [links[i] for i in range(4, len(links), 5) if links[i] > 0]
    if loads:
        lo, hi = min(loads), max(loads)
        runs = sorted(range(0, len(links), 5), key=lambda i: (links[i + 4], i))  # hot on top
        half = max(0, p // 10)
        off = p // 5
        for i in runs:
            x0, y0, x1, y1, b = links[i:i + 5]
            t = 1.0 if hi <= lo else math.log(b / lo) / math.log(hi / lo)
            c = _ramp(t).astype(np.uint8)
            dx, dy = (x1 > x0) - (x1 < x0), (y1 > y0) - (y1 < y0)
            # through the PE centres, shifted to the right of the direction of travel
            cx0, cx1 = sorted((x0 * p + p // 2 - dy * off, x1 * p + p // 2 - dy * off))
            cy0, cy1 = sorted((y0 * p + p // 2 + dx * off, y1 * p + p // 2 + dx * off))
            img[max(0, cy0 - half):cy1 + half + 1, max(0, cx0 - half):cx1 + half + 1] = c
    return img


def encode_png(img: np.ndarray) -> bytes:
    """An 8-bit RGB PNG (filter 0 on every row)."""
    h, w, _ = img.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def write_png(data: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(render_mesh(data)))
    return path
