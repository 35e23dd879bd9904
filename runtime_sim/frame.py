"""What an executing region sees (`Frame`) and what it executes (`Instr`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from xdsl.ir import Operation, SSAValue

from wsc.ir.layout import Layout
from wsc.runtime_sim.memory import Buffer
from wsc.machine.cost import CostModel


@dataclass
class Stack:
    """PEs that several regions share (a folded stack of layers): one runs at a time."""

    name: str
    busy: float = 0.0  # until when a member's instruction occupies the PEs


@dataclass
class Frame:
    """One region during one program run."""

    region: str
    kernel: str
    grid: tuple[int, int]
    bufs: dict[SSAValue, Buffer]
    cost: CostModel
    pos0: int  # the program's first token position (0 for prefill, p for decode)
    functional: bool = True  # False: estimate-only, move no data
    clock: float = 0.0
    deferred: Instr | None = None  # an op whose result is computed in bulk (cannon.py)
    # cycles by category spent by this region, for utilisation
    compute: float = 0.0
    fabric: float = 0.0
    waiting: float = 0.0
    # the critical path that ends at `clock`, by category: (compute, fabric, waiting); its
    # sum is always `clock`. A receive that had to wait adopts the sender's path.
    path: tuple[float, float, float] = (0.0, 0.0, 0.0)
    stack: Stack | None = None  # the PEs it shares with other regions, time-multiplexed

    def turn(self, start: float) -> float:
        """When an instruction that could start at `start` gets the PEs: after whatever the
        stack's other members are running."""
        return start if self.stack is None else max(start, self.stack.busy)

    def hold(self) -> None:
        """The PEs were this region's until its clock."""
        if self.stack is not None:
            self.stack.busy = max(self.stack.busy, self.clock)

    def advance(self, cycles: float, category: int) -> None:
        """Move the clock forward by `cycles` spent on `category` (0 compute, 1 fabric, 2 wait)."""
        if cycles <= 0:
            return
        self.clock += cycles
        p = list(self.path)
        p[category] += cycles
        self.path = (p[0], p[1], p[2])
        if category == 0:
            self.compute += cycles
        elif category == 1:
            self.fabric += cycles
        else:
            self.waiting += cycles

    def buf(self, v: SSAValue) -> Buffer:
        return self.bufs[v]

    # --- lazy data movement (memory.py) ----------------------------------------------------

    def release(self, b: Buffer) -> None:
        """Before `b`'s own storage is overwritten: every buffer still reading it takes a copy."""
        for other in self.bufs.values():
            if other is not b and other.src is b.home:
                other.materialize()

    def claim(self, b: Buffer) -> None:
        """Before an op writes `b` in place: its storage holds its contents, and only its."""
        self.release(b)
        b.materialize()

    def prepare(self, ins: Instr) -> None:
        """Before an op that works on its operands' own memory."""
        for v in ins.writes:
            self.claim(self.bufs[v])
        for v in ins.reads:
            self.bufs[v].materialize()

    def wrote(self, ins: Instr) -> None:
        for v in ins.writes:
            self.bufs[v].home.touch()

    def layout(self, v: SSAValue) -> Layout:
        lay = self.bufs[v].layout
        if lay is None:
            raise ValueError(f"buffer {self.bufs[v].name} has no layout")
        return lay


Kind = str  # "compute" | "fabric" | "async" | "send" | "recv" | "loop" | "swap"


@dataclass
class Instr:
    op: Operation
    kind: Kind
    run: Callable[[Frame], None]
    cycles: Callable[[Frame], float]
    reads: tuple[SSAValue, ...] = ()
    writes: tuple[SSAValue, ...] = ()
    body: list[Instr] = field(default_factory=list)  # loops
    count: int = 1
    channel: str = ""
    label: str = ""
    lazy: bool = False  # the op handles lazily moved operands itself (memory.py)
    computes: bool = True  # it can make a NaN/Inf (moving data cannot)
    cannon: object = None  # a loop that is a Cannon GEMM (cannon.py)
    ring: object = None  # a loop that is a prefill attention ring (ring.py)
    gemv: object = None  # a matmul that, with the all-reduce after it, is a GEMV (gemv.py)
