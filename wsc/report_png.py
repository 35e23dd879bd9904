"""`wsc report --png`: a static figure of the mesh view, no browser needed.

The figure has a title (model, target) and a caption (PEs, placement objective against its
baselines, modeled latency) above the mesh, and a legend below it (the kernel kinds' colours,
the link-load ramp). On the mesh, kernels are filled with their kind's colour and labelled
with the longest form of their name that fits; the routes' link loads are drawn on top as a
heat map, in the page's colours. The mesh has `pixels_per_pe(W, H)` pixels per PE on each
side, so a small test mesh is still legible and wse3's 755x1170 mesh is drawn at one pixel
per PE. Written with numpy and zlib only; text uses the X11 6x13 bitmap font (public domain)
from `report_assets/font6x13.txt`.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from wsc.report_data import KIND_COLORS, OTHER_COLOR

TARGET_PX = 1024  # the long side of the mesh, for meshes smaller than this
MESH_BG = (228, 231, 235)
PAPER = (255, 255, 255)
INK = (31, 35, 40)
MUTED = (89, 99, 110)
LINK_STOPS = np.array([[13, 8, 135], [106, 0, 168], [177, 42, 144], [225, 100, 98], [252, 166, 54]], float)
GLYPH_W, GLYPH_H = 6, 13
PAD = 16  # the figure's margin, and the gap between its parts
# characters the font lacks, drawn as their nearest ASCII
FALLBACK = {"–": "-", "—": "-", "…": "...", "→": "->"}


def pixels_per_pe(width: int, height: int) -> int:
    return max(1, TARGET_PX // max(width, height))


def _rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _ramp(t: float) -> np.ndarray:
    t = min(1.0, max(0.0, t)) * (len(LINK_STOPS) - 1)
    i = min(int(t), len(LINK_STOPS) - 2)
    return LINK_STOPS[i] + (LINK_STOPS[i + 1] - LINK_STOPS[i]) * (t - i)


# --- text -------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def glyphs() -> dict[str, np.ndarray]:
    """The font: a [13, 6] boolean mask per character."""
    text = resources.files("wsc").joinpath("report_assets", "font6x13.txt").read_text(encoding="ascii")
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            code, rows = line.split()
            bits = np.array([int(rows[i:i + 2], 16) for i in range(0, 2 * GLYPH_H, 2)], np.uint8)
            out[chr(int(code))] = np.unpackbits(bits[:, None], axis=1)[:, :GLYPH_W].astype(bool)
    return out


def text_mask(text: str, scale: int = 1) -> np.ndarray:
    """The pixels of a line of text, `scale` times the font's size."""
    font = glyphs()
    chars = "".join(FALLBACK.get(c, c) for c in text)
    cells = [font.get(c, font["?"]) for c in chars] or [np.zeros((GLYPH_H, 0), bool)]
    mask = np.concatenate(cells, axis=1)
    return mask.repeat(scale, axis=0).repeat(scale, axis=1)


def text_width(text: str, scale: int = 1) -> int:
    return text_mask(text, scale).shape[1]


def _halo(mask: np.ndarray) -> np.ndarray:
    """The mask grown by one pixel all round: a light outline keeps text legible on colour."""
    m = np.pad(mask, 1)
    grown = m.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            grown |= np.roll(np.roll(m, dy, axis=0), dx, axis=1)
    return grown


def wrap(text: str, width_px: int, scale: int = 1) -> list[str]:
    """Greedy word wrap to a width in pixels."""
    per_line = max(1, width_px // (GLYPH_W * scale))
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > per_line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line]


@dataclass
class Figure:
    """The image being drawn, and every text on it with its top-left corner (for tests)."""

    img: np.ndarray
    texts: list[tuple[str, int, int, int]] = field(default_factory=list)  # text, x, y, scale

    def text(self, s: str, x: int, y: int, color=INK, scale: int = 1, halo: bool = False) -> int:
        """Draw `s` with its top-left corner at (x, y), clipped to the image; returns its width."""
        mask = text_mask(s, scale)
        if halo:
            self._paint(_halo(mask), x - 1, y - 1, (255, 255, 255))
        self._paint(mask, x, y, color)
        self.texts.append((s, x, y, scale))
        return mask.shape[1]

    def _paint(self, mask: np.ndarray, x: int, y: int, color) -> None:
        h, w = self.img.shape[:2]
        y0, x0 = max(0, y), max(0, x)
        y1, x1 = min(h, y + mask.shape[0]), min(w, x + mask.shape[1])
        if y1 > y0 and x1 > x0:
            self.img[y0:y1, x0:x1][mask[y0 - y:y1 - y, x0 - x:x1 - x]] = color


# --- the mesh ---------------------------------------------------------------------------------


def render_mesh(data: dict) -> np.ndarray:
    """The mesh view as an `[H*p, W*p, 3]` uint8 image (p = pixels per PE), without text."""
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
    links, loads = data["links"], _loads(data)
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


LAYER_NAME = re.compile(r"^(?:model\.|transformer\.)?(?:layers|h|blocks)\.(\d+)\.(.*)$")


def label_candidates(name: str) -> list[str]:
    """A kernel's name, then shorter forms, as the page labels it: "model.layers.12.mlp.up_proj",
    "12.mlp.up_proj", "L12 up_proj", "L12 up"."""
    m = LAYER_NAME.match(name)
    role = (m[2] if m else name).split(".")[-1]
    abbr = re.sub(r"layer_?norm", "ln", re.sub(r"_proj$", "", role))
    if not m:
        return [name, role, abbr, abbr[:4]]
    layer = f"L{m[1]} "
    return [name, f"{m[1]}.{m[2]}", layer + role, layer + abbr, layer + abbr[:3]]


def label_kernels(fig: Figure, data: dict, x0: int, y0: int) -> None:
    """Each kernel's longest label that fits inside it, centred, with its grid below when there
    is room; kernels too small for any label stay bare."""
    W, H = data["meta"]["width"], data["meta"]["height"]
    p = pixels_per_pe(W, H)
    for k in data["kernels"]:
        w, h = k["cols"] * p, k["rows"] * p
        text = next((t for t in label_candidates(k["name"]) if text_width(t) <= w - 4), None)
        if text is None or h < GLYPH_H + 2:
            continue
        grid = f"{k['rows']}x{k['cols']}"
        two = h >= 2 * GLYPH_H + 6 and text_width(grid) <= w - 4
        cx, cy = x0 + k["x"] * p + w // 2, y0 + k["y"] * p + h // 2
        top = cy - (GLYPH_H if two else GLYPH_H // 2)
        fig.text(text, cx - text_width(text) // 2, top, INK, halo=True)
        if two:
            fig.text(grid, cx - text_width(grid) // 2, top + GLYPH_H + 1, MUTED, halo=True)


# --- title, caption, legend -------------------------------------------------------------------


def title_of(data: dict) -> str:
    m = data["meta"]
    layers = m["layers"] if m["layers"] is not None else "?"
    return f"wsc report: {m['arch']} ({layers} layers) on {m['target']}"


def caption_of(data: dict) -> str:
    """One paragraph: the workload, the mesh, the placement against its baselines, the timing."""
    from wsc.report import fmt_int, fmt_pct, fmt_rate, fmt_ratio, fmt_seconds, fmt_si

    m, s = data["meta"], data["summary"]
    p = pixels_per_pe(m["width"], m["height"])
    parts = [f"{m['dtype']}, prompt {m['seq_len']} tokens, KV cache {m['max_seq']} positions.",
             f"{s['kernels']} kernels on {fmt_int(s['pes_used'])} of {fmt_int(s['pes_available'])} PEs "
             f"({fmt_pct(s['pes_pct'])}) of the {m['width']} x {m['height']} mesh, {p} px per PE, "
             "(0, 0) top left."]
    obj = s.get("objective")
    if obj is not None:
        vs = ", ".join(f"{name} {fmt_ratio(s.get(key), obj)}" for key, name in
                       (("rowmajor_objective", "row-major"), ("snake_objective", "snake")))
        parts.append(f"Placement {fmt_si(obj)} byte·hops (baselines: {vs}).")
    if "ttft_s" in s:
        parts.append(f"Modeled: time to first token {fmt_seconds(s['ttft_s'])}"
                     + (f", {fmt_rate(s['tokens_per_s'])} tokens/s." if "tokens_per_s" in s else "."))
    return " ".join(parts)


def _loads(data: dict) -> list[int]:
    links = data["links"]
    return [links[i] for i in range(4, len(links), 5) if links[i] > 0]


LEGEND_ROW = GLYPH_H + 6
RAMP_W = 120


def legend_layout(data: dict, width: int) -> tuple[list[tuple[str, tuple, int, int]], int]:
    """Where the legend's kind swatches go (label, colour, x, y from the legend's corner),
    flowing over as many rows as the width needs, and the legend's height (the link-load ramp,
    when there are routes, takes the last row)."""
    items, x, y = [], 0, 0
    for k in data["kinds"]:
        w = GLYPH_H + 4 + text_width(k["label"])
        if x > 0 and x + w > width:
            x, y = 0, y + LEGEND_ROW
        items.append((k["label"], _rgb(k["color"]), x, y))
        x += w + 18
    rows = y // LEGEND_ROW + 1 + (1 if _loads(data) else 0)
    return items, rows * LEGEND_ROW


def draw_legend(fig: Figure, data: dict, x0: int, y0: int, width: int) -> None:
    from wsc.report import fmt_bytes

    items, height = legend_layout(data, width)
    for label, color, x, y in items:
        fig.img[y0 + y:y0 + y + GLYPH_H - 1, x0 + x:x0 + x + GLYPH_H - 1] = color
        fig.text(label, x0 + x + GLYPH_H + 4, y0 + y, INK)
    loads = _loads(data)
    if loads:
        y = y0 + height - LEGEND_ROW
        ramp = np.stack([_ramp(t) for t in np.linspace(0.0, 1.0, RAMP_W)]).astype(np.uint8)
        fig.img[y + 2:y + GLYPH_H - 2, x0:x0 + RAMP_W] = ramp
        fig.text(f"link load {fmt_bytes(min(loads))} – {fmt_bytes(max(loads))} per run (log scale)",
                 x0 + RAMP_W + 8, y, INK)


def render_figure(data: dict) -> Figure:
    """The whole figure: title, caption, the labelled mesh, the legend."""
    mesh = render_mesh(data)
    mh, mw = mesh.shape[:2]
    width = max(mw, 560) + 2 * PAD
    title = wrap(title_of(data), width - 2 * PAD, scale=2)
    caption = wrap(caption_of(data), width - 2 * PAD)
    top = PAD + len(title) * (2 * GLYPH_H + 4) + 4  # the caption's first line
    head = top + len(caption) * (GLYPH_H + 2) + PAD
    _, legend_h = legend_layout(data, width - 2 * PAD)
    fig = Figure(np.full((head + mh + PAD + legend_h + PAD, width, 3), PAPER, np.uint8))
    for i, line in enumerate(title):
        fig.text(line, PAD, PAD + i * (2 * GLYPH_H + 4), INK, scale=2)
    for i, line in enumerate(caption):
        fig.text(line, PAD, top + i * (GLYPH_H + 2), MUTED)
    x0 = (width - mw) // 2
    fig.img[head:head + mh, x0:x0 + mw] = mesh
    label_kernels(fig, data, x0, head)
    draw_legend(fig, data, PAD, head + mh + PAD, width - 2 * PAD)
    return fig


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
    path.write_bytes(encode_png(render_figure(data).img))
    return path
