"""`Placement`: what placement hands to lowering and, through the bundle's placement.json, to
the simulator. Plain data; `to_json` is deterministic (sorted keys, no wall-clock times)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FORMAT = "wsc.placement/1"

HOP_MODEL = (
    "a kernel streams along x: input at the middle PE of its west column, output at the middle "
    "PE of its east column (flip=false), or the mirror image (flip=true); "
    "hops = |out.x - in.x| + |out.y - in.y|, the length of the dimension-ordered route"
)


@dataclass(frozen=True)
class PlacedKernel:
    name: str
    kind: str
    origin: tuple[int, int]  # (x, y) of the top-left PE
    shape: tuple[int, int]  # (rows, cols)
    flip: bool  # True: streams east to west
    in_port: tuple[int, int]
    out_port: tuple[int, int]
    block: int | None = None
    role: str = ""


@dataclass(frozen=True)
class PlacedEdge:
    src: str
    dst: str
    bytes: int
    tensor: str
    hops: int
    order: str  # "xy" or "yx"
    path: tuple[tuple[int, int], ...]  # corner points of the route, out port to in port
    group: int  # multicast tree: edges of one producer and tensor share it and its color
    color: int
    max_link_load_bytes: int


@dataclass
class Placement:
    width: int
    height: int
    kernels: dict[str, PlacedKernel]
    edges: list[PlacedEdge]
    stats: dict[str, Any] = field(default_factory=dict)
    colors: int = 24
    reserved_colors: int = 4

    def rect(self, name: str) -> tuple[int, int, int, int]:
        """(x, y, rows, cols) of a kernel."""
        k = self.kernels[name]
        return (*k.origin, *k.shape)

    def to_json(self) -> dict[str, Any]:
        kernels = {
            k.name: {"kind": k.kind, "origin": list(k.origin), "shape": list(k.shape), "flip": k.flip,
                     "in_port": list(k.in_port), "out_port": list(k.out_port),
                     "block": k.block, "role": k.role}
            for k in self.kernels.values()
        }
        edges = [
            {"src": e.src, "dst": e.dst, "bytes": e.bytes, "tensor": e.tensor, "hops": e.hops,
             "order": e.order, "path": [list(p) for p in e.path], "group": e.group, "color": e.color,
             "max_link_load_bytes": e.max_link_load_bytes}
            for e in self.edges
        ]
        doc = {
            "format": FORMAT,
            "mesh": {"width": self.width, "height": self.height},
            "colors": {"total": self.colors, "reserved": self.reserved_colors},
            "hop_model": HOP_MODEL,
            "kernels": kernels,
            "edges": edges,
            "stats": self.stats,
        }
        return json.loads(json.dumps(doc, sort_keys=True))  # plain types, keys sorted

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Placement:
        if doc.get("format") != FORMAT:
            from wsc.errors import PlacementError

            raise PlacementError(f"placement.json has format {doc.get('format')!r}, expected {FORMAT!r}")
        kernels = {
            name: PlacedKernel(name, k["kind"], tuple(k["origin"]), tuple(k["shape"]), bool(k["flip"]),
                               tuple(k["in_port"]), tuple(k["out_port"]), k.get("block"), k.get("role", ""))
            for name, k in doc["kernels"].items()
        }
        edges = [
            PlacedEdge(e["src"], e["dst"], e["bytes"], e.get("tensor", ""), e["hops"], e["order"],
                       tuple(tuple(p) for p in e["path"]), e["group"], e["color"], e["max_link_load_bytes"])
            for e in doc["edges"]
        ]
        return cls(doc["mesh"]["width"], doc["mesh"]["height"], kernels, edges, dict(doc["stats"]),
                   doc["colors"]["total"], doc["colors"]["reserved"])
