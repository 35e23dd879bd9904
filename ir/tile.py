"""`wsc.tile`: per-region SPMD programs (DESIGN §5, third level).

A `wsc.tile.program` (one per phase: prefill, decode) holds one `wsc.tile.region` per kernel
and one `wsc.tile.channel` per producer→consumer edge. A region is a rectangle of PEs that all
run the same op list on their own SRAM (SPMD). Its buffers are declared with a per-PE shape,
a dtype, a byte offset into SRAM and, where the data is a slice of a global matrix, the
`#wsc.tile.layout` saying which slice each PE holds. Ops name buffers as SSA values of type
`!wsc.tile.buf` and write into them (destination-passing style): there are no tensors at this
level, only memory.

Fabric ops move data between PEs of a region (`shift`, `allreduce`, `attn_merge`) or between
regions over a channel (`send`/`recv`; a recv may take a slice of what was sent). Positions
(for causal masks, rotary embeddings, embeddings of positions) are derived from a buffer's
layout plus how far shifts have rotated it, and the program's runtime start position `pos0`.

The verifier checks what can be checked statically: buffers fit the SRAM budget and do not
overlap, persistent buffers agree between programs, and every channel has one sender and one
receiver. The simulator checks the rest at run time.
"""

from __future__ import annotations

import math
from typing import ClassVar

from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    SymbolNameConstraint,
    UnitAttr,
)
from xdsl.ir import Attribute, Data, Dialect, Operation, ParametrizedAttribute, TypeAttribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    result_def,
    opt_prop_def,
    prop_def,
    region_def,
    traits_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.traits import IsolatedFromAbove, NoTerminator, SymbolOpInterface
from xdsl.utils.exceptions import VerifyException

from wsc.ir.attrs import DTYPE_BYTES, dtype_name, get_ints
from wsc.ir.layout import DimMap, Layout

SRAM_BUDGET_ATTR = "wsc.sram_budget"
HOST = "host"

# --- types and attributes -------------------------------------------------------------


@irdl_attr_definition
class BufType(ParametrizedAttribute, TypeAttribute):
    """A handle to a per-PE buffer; its shape, dtype and offset live on `wsc.tile.buffer`."""

    name = "wsc.tile.buf"


BUF = BufType()


def _parse_dim(parser: AttrParser) -> DimMap:
    if parser.parse_optional_punctuation("*") is not None:
        return DimMap()
    coef = {"r": 0, "c": 0}
    while True:
        k = parser.parse_optional_integer(allow_boolean=False, allow_negative=False)
        if k is not None:
            parser.parse_punctuation("*")
        v = parser.parse_keyword_in(("r", "c"), " in a layout dimension")
        coef[v] = 1 if k is None else k
        if parser.parse_optional_punctuation("+") is None:
            break
    parser.parse_keyword("mod")
    parts = parser.parse_integer(allow_boolean=False, allow_negative=False)
    cyclic = parser.parse_optional_keyword("cyclic") is not None
    return DimMap(parts, coef["r"], coef["c"], cyclic)


@irdl_attr_definition
class LayoutAttr(Data[Layout]):
    """`#wsc.tile.layout<[M, N] on [R, C], rows = r mod R cyclic, cols = r + c mod C>`"""

    name = "wsc.tile.layout"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> Layout:
        def pair() -> tuple[int, int]:
            vals = parser.parse_comma_separated_list(
                parser.Delimiter.SQUARE, lambda: parser.parse_integer(allow_boolean=False)
            )
            if len(vals) != 2:
                parser.raise_error("a layout shape and grid have two entries")
            return (vals[0], vals[1])

        with parser.in_angle_brackets():
            shape = pair()
            parser.parse_keyword("on")
            grid = pair()
            parser.parse_punctuation(",")
            parser.parse_keyword("rows")
            parser.parse_punctuation("=")
            rows = _parse_dim(parser)
            parser.parse_punctuation(",")
            parser.parse_keyword("cols")
            parser.parse_punctuation("=")
            cols = _parse_dim(parser)
        try:
            return Layout(shape, grid, rows, cols)
        except ValueError as e:
            parser.raise_error(str(e))

    def print_parameter(self, printer: Printer) -> None:
        printer.print_string(f"<{self.data}>")


# --- program structure ----------------------------------------------------------------


class TileOp(IRDLOperation):
    irdl_options = (ParsePropInAttrDict(),)


@irdl_op_definition
class ProgramOp(TileOp):
    """One phase's program: regions and the channels between them."""

    name = "wsc.tile.program"
    sym_name = prop_def(SymbolNameConstraint())
    phase = prop_def(StringAttr)
    tokens = prop_def(IntegerAttr)  # tokens processed per run (S for prefill, 1 for decode)
    body = region_def("single_block")
    traits = traits_def(NoTerminator(), SymbolOpInterface())
    assembly_format = "$sym_name attr-dict-with-keyword $body"

    def regions_(self) -> list[RegionOp]:
        return [op for op in self.body.block.ops if isinstance(op, RegionOp)]

    def channels(self) -> list[ChannelOp]:
        return [op for op in self.body.block.ops if isinstance(op, ChannelOp)]

    def verify_(self) -> None:
        names = [r.sym_name.data for r in self.regions_()]
        if len(set(names)) != len(names):
            raise VerifyException(f"program {self.sym_name.data}: duplicate region names")
        sends: dict[str, list[str]] = {}
        recvs: dict[str, list[str]] = {}
        for region in self.regions_():
            for op in region.walk():
                if isinstance(op, SendOp):
                    sends.setdefault(op.channel.data, []).append(region.sym_name.data)
                elif isinstance(op, RecvOp):
                    recvs.setdefault(op.channel.data, []).append(region.sym_name.data)
        for ch in self.channels():
            c = ch.sym_name.data
            src, dst = ch.src.data, ch.dst.data
            if src != HOST and sends.get(c) != [src]:
                raise VerifyException(f"channel {c}: expected one send in {src}, found {sends.get(c, [])}")
            if dst != HOST and recvs.get(c) != [dst]:
                raise VerifyException(f"channel {c}: expected one recv in {dst}, found {recvs.get(c, [])}")
        declared = {ch.sym_name.data for ch in self.channels()}
        for c in sorted((sends.keys() | recvs.keys()) - declared):
            raise VerifyException(f"program {self.sym_name.data}: channel {c} is used but not declared")


@irdl_op_definition
class RegionOp(TileOp):
    """A rectangle of PEs running one SPMD op list."""

    name = "wsc.tile.region"
    sym_name = prop_def(SymbolNameConstraint())
    origin = prop_def(DenseArrayBase)  # (x, y) of the top-left PE on the mesh
    shape = prop_def(DenseArrayBase)  # (rows, cols)
    kernel = prop_def(StringAttr)  # kernel kind: linear, attention, norm, ...
    module = opt_prop_def(StringAttr)
    # regions of one stack share their PEs (same origin and shape): their buffers lie at
    # disjoint offsets and their programs run in sequence, time-multiplexed (DESIGN §4 as
    # amended by layer folding, passes/plan.py)
    stack = opt_prop_def(StringAttr)
    # the module path of the op whose value the region's first result is: the last op fused
    # into its epilogue (an activation's module, say), when that is not the kernel's own
    result_module = opt_prop_def(StringAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator(), IsolatedFromAbove(), SymbolOpInterface())
    assembly_format = "$sym_name attr-dict-with-keyword $body"

    @property
    def grid(self) -> tuple[int, int]:
        return get_ints(self.shape)  # type: ignore[return-value]

    def buffers(self) -> list[BufferOp]:
        return [op for op in self.body.block.ops if isinstance(op, BufferOp)]

    def verify_(self) -> None:
        budget_attr = _module_attr(self, SRAM_BUDGET_ATTR)
        spans = []
        for b in self.buffers():
            lo, hi = b.offset_bytes, b.offset_bytes + b.nbytes
            if isinstance(budget_attr, IntegerAttr) and hi > budget_attr.value.data:
                raise VerifyException(
                    f"region {self.sym_name.data}: buffer {b.sym.data} ends at byte {hi}, "
                    f"past the per-PE budget of {budget_attr.value.data}"
                )
            spans.append((lo, hi, b.sym.data))
            if b.layout is not None and b.layout.data.grid != self.grid:
                raise VerifyException(
                    f"region {self.sym_name.data}: buffer {b.sym.data} has a layout for grid "
                    f"{b.layout.data.grid}, the region is {self.grid}"
                )
        spans.sort()
        for (lo0, hi0, n0), (lo1, hi1, n1) in zip(spans, spans[1:]):
            if lo1 < hi0 and lo1 != hi1:
                raise VerifyException(f"region {self.sym_name.data}: buffers {n0} and {n1} overlap")


def _module_attr(op: Operation, key: str) -> Attribute | None:
    top = op.get_toplevel_object()
    return top.attributes.get(key) if isinstance(top, ModuleOp) else None


@irdl_op_definition
class ChannelOp(TileOp):
    """A producer→consumer edge over the fabric (or to/from the host)."""

    name = "wsc.tile.channel"
    sym_name = prop_def(SymbolNameConstraint())
    src = prop_def(StringAttr)
    dst = prop_def(StringAttr)
    nbytes = prop_def(IntegerAttr, prop_name="bytes")  # bytes the receiver takes
    hops = opt_prop_def(IntegerAttr)  # route length, from placement
    lanes = opt_prop_def(IntegerAttr)  # parallel links the transfer spreads over
    load = opt_prop_def(IntegerAttr)  # bytes on the busiest link of the route (contention)
    color = opt_prop_def(IntegerAttr)
    route = opt_prop_def(StringAttr)  # "xy" or "yx"
    traits = traits_def(SymbolOpInterface())
    assembly_format = "$sym_name attr-dict"


@irdl_op_definition
class LoopOp(TileOp):
    """Repeat the body `count` times.

    `chunks` marks a chunked prefill's loop over the prompt's chunks: `count` is the compiled
    number, and a shorter prompt runs only the chunks it fills (the host says how many)."""

    name = "wsc.tile.loop"
    count = prop_def(IntegerAttr)
    chunks = opt_prop_def(UnitAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator())
    assembly_format = "attr-dict-with-keyword $body"


# --- memory ---------------------------------------------------------------------------


@irdl_op_definition
class BufferOp(TileOp):
    """A per-PE buffer. `weight` names its initial contents in the bundle's weight file;
    `persistent` buffers (weights, KV cache) keep their contents across program runs and
    must be declared identically by every program."""

    name = "wsc.tile.buffer"
    sym = prop_def(StringAttr)
    shape = prop_def(DenseArrayBase)
    dtype = prop_def(Attribute)
    offset = prop_def(IntegerAttr)
    layout = opt_prop_def(LayoutAttr)
    weight = opt_prop_def(StringAttr)
    persistent = opt_prop_def(UnitAttr)
    fifo = opt_prop_def(StringAttr)  # the channel whose messages land here: [depth, *tile]
    result = result_def(BUF)
    assembly_format = "$sym attr-dict"

    @property
    def dims(self) -> tuple[int, ...]:
        return get_ints(self.shape)

    @property
    def dtype_str(self) -> str:
        return dtype_name(self.dtype)

    @property
    def nbytes(self) -> int:
        n = DTYPE_BYTES[self.dtype_str]
        for d in self.dims:
            n *= d
        return n

    @property
    def offset_bytes(self) -> int:
        return self.offset.value.data

    def verify_(self) -> None:
        if self.layout is not None and tuple(self.layout.data.tile) != self.dims[-2:]:
            raise VerifyException(
                f"buffer {self.sym.data}: shape {self.dims} but its layout gives tiles of "
                f"{self.layout.data.tile}"
            )
        if self.offset_bytes % 8:
            raise VerifyException(f"buffer {self.sym.data}: offset {self.offset_bytes} not 8-aligned")


ALIGN = 8  # buffer offsets are 64-bit aligned (one memory word)


def buffer_of(value) -> BufferOp:
    """The `wsc.tile.buffer` that declares an SSA buffer handle."""
    owner = value.owner
    if not isinstance(owner, BufferOp):
        raise VerifyException(f"{value} is not a buffer")
    return owner


@irdl_op_definition
class FillOp(TileOp):
    name = "wsc.tile.fill"
    dst = operand_def(BUF)
    value = prop_def(FloatAttr)
    assembly_format = "$dst attr-dict"


@irdl_op_definition
class CopyOp(TileOp):
    """Copy `src` into rows `[row_offset, row_offset + rows(src))` of `dst`, converting dtype."""

    name = "wsc.tile.copy"
    src = operand_def(BUF)
    dst = operand_def(BUF)
    row_offset = opt_prop_def(IntegerAttr)
    assembly_format = "$src `->` $dst attr-dict"


@irdl_op_definition
class SwapOp(TileOp):
    """Exchange two buffer handles (double buffering): no data moves."""

    name = "wsc.tile.swap"
    a = operand_def(BUF)
    b = operand_def(BUF)
    assembly_format = "$a `,` $b attr-dict"


# --- channels -------------------------------------------------------------------------


@irdl_op_definition
class SendOp(TileOp):
    """Send the global matrix that `src` holds (per its layout) over `channel`. The message
    lands in the receiver's FIFO; when every slot of it is full, the send waits."""

    name = "wsc.tile.send"
    src = operand_def(BUF)
    channel = prop_def(StringAttr)
    assembly_format = "$src attr-dict"


@irdl_op_definition
class RecvOp(TileOp):
    """Take the oldest message of `channel` out of its FIFO into `dst` (per `dst`'s layout);
    `slice = [r0, r1, c0, c1]` is the window of the sent matrix this region takes;
    `last_valid` makes its rows the last valid row of the message instead (a one-row window:
    a prompt shorter than the compiled length leaves rows of its final chunk unused).

    The FIFO is a buffer of this region, `[depth, *tile]` in `dst`'s dtype, declared with
    `fifo = channel`: senders write messages into its slots as they arrive (a sender whose
    message finds every slot full waits: back-pressure), and this op copies one out."""

    name = "wsc.tile.recv"
    fifo = operand_def(BUF)
    dst = operand_def(BUF)
    channel = prop_def(StringAttr)
    window = opt_prop_def(DenseArrayBase, prop_name="slice")
    last_valid = opt_prop_def(UnitAttr)
    assembly_format = "$fifo `->` $dst attr-dict"

    def verify_(self) -> None:
        f, d = buffer_of(self.fifo), buffer_of(self.dst)
        if f.fifo is None or f.fifo.data != self.channel.data:
            raise VerifyException(f"recv on {self.channel.data}: buffer {f.sym.data} is not its FIFO")
        if f.dims[1:] != d.dims or f.dtype_str != d.dtype_str or f.dims[0] < 1:
            raise VerifyException(
                f"recv on {self.channel.data}: FIFO {f.sym.data} {f.dims} {f.dtype_str} does "
                f"not hold slots of {d.sym.data} {d.dims} {d.dtype_str}")


# --- local compute --------------------------------------------------------------------


@irdl_op_definition
class MatmulOp(TileOp):
    """`c (+)= a @ b` (or `a @ b^T` with `transpose_b`), accumulating in fp32."""

    name = "wsc.tile.matmul"
    a = operand_def(BUF)
    b = operand_def(BUF)
    c = operand_def(BUF)
    accumulate = opt_prop_def(UnitAttr)
    transpose_b = opt_prop_def(UnitAttr)
    assembly_format = "$a `,` $b `->` $c attr-dict"


UNARY_FNS = ("neg", "exp", "tanh", "sigmoid", "rsqrt", "sqrt", "relu", "silu", "erf", "cos",
             "sin", "reciprocal", "gelu", "gelu_tanh", "identity")
BINARY_FNS = ("add", "sub", "mul", "div", "pow", "maximum", "minimum")
REDUCE_FNS = frozenset(("sum", "max", "sumsq"))
TRANSCENDENTAL_FNS = frozenset(("exp", "tanh", "sigmoid", "rsqrt", "sqrt", "silu", "erf", "cos",
                                "sin", "reciprocal", "gelu", "gelu_tanh", "pow", "div"))


@irdl_op_definition
class UnaryOp(TileOp):
    name = "wsc.tile.unary"
    x = operand_def(BUF)
    y = operand_def(BUF)
    fn = prop_def(StringAttr)
    assembly_format = "$x `->` $y attr-dict"

    def verify_(self) -> None:
        if self.fn.data not in UNARY_FNS:
            raise VerifyException(f"unknown unary function {self.fn.data}")


@irdl_op_definition
class BinaryOp(TileOp):
    """`z = x fn y`, broadcasting size-1 dimensions of `y` (row or column vectors). With
    `groups`, `y` has one column per group of equal consecutive columns of `x` (one value
    per head and row), broadcast over its group."""

    name = "wsc.tile.binary"
    x = operand_def(BUF)
    y = operand_def(BUF)
    z = operand_def(BUF)
    fn = prop_def(StringAttr)
    groups = opt_prop_def(IntegerAttr)
    assembly_format = "$x `,` $y `->` $z attr-dict"

    def verify_(self) -> None:
        if self.fn.data not in BINARY_FNS:
            raise VerifyException(f"unknown binary function {self.fn.data}")


@irdl_op_definition
class ScalarOp(TileOp):
    """`y = x fn value` (or `value fn x` with `reverse`)."""

    name = "wsc.tile.scalar"
    x = operand_def(BUF)
    y = operand_def(BUF)
    fn = prop_def(StringAttr)
    value = prop_def(FloatAttr)
    reverse = opt_prop_def(UnitAttr)
    assembly_format = "$x `->` $y attr-dict"

    def verify_(self) -> None:
        if self.fn.data not in BINARY_FNS:
            raise VerifyException(f"unknown scalar function {self.fn.data}")


@irdl_op_definition
class ReduceOp(TileOp):
    """Reduce the local tile of `x` along `dim` (keeping it as size 1), skipping padding
    elements according to `x`'s layout. With `groups` (dim 1 only) each group of equal
    consecutive columns reduces to one column of `y` (per-head statistics)."""

    name = "wsc.tile.reduce"
    x = operand_def(BUF)
    y = operand_def(BUF)
    fn = prop_def(StringAttr)  # one of REDUCE_FNS; sumsq is the sum of squares, in fp32
    dim = prop_def(IntegerAttr)
    groups = opt_prop_def(IntegerAttr)
    assembly_format = "$x `->` $y attr-dict"

    def verify_(self) -> None:
        if self.fn.data not in REDUCE_FNS:
            raise VerifyException(f"unknown reduction {self.fn.data}")
        if self.groups is not None and self.dim.value.data != 1:
            raise VerifyException("a grouped reduction runs along dim 1")


@irdl_op_definition
class GatherOp(TileOp):
    """Embedding lookup: `out[i] (+)= table[ids[i]]` for ids in this PE's block of table rows
    (per the table's layout and rotation), zero otherwise; summing over the PEs that hold the
    other blocks completes it."""

    name = "wsc.tile.gather"
    table = operand_def(BUF)
    ids = operand_def(BUF)
    out = operand_def(BUF)
    accumulate = opt_prop_def(UnitAttr)
    assembly_format = "$table `,` $ids `->` $out attr-dict"


@irdl_op_definition
class PositionsOp(TileOp):
    """`dst[0, j] = pos0 + (global index of column j)`: the positions of the tokens."""

    name = "wsc.tile.positions"
    dst = operand_def(BUF)
    assembly_format = "$dst attr-dict"


@irdl_op_definition
class RopeAnglesOp(TileOp):
    """The rotary angles of each row of `x` (position `pos0 + global row`): `cs[:, :d/2]` =
    cos(position * inv_freq) * scaling and `cs[:, d/2:]` = sin(...) * scaling. Computed once
    per region and shared by every `rope` whose rows are laid out like `x`'s."""

    name = "wsc.tile.rope_angles"
    x = operand_def(BUF)
    inv_freq = operand_def(BUF)
    cs = operand_def(BUF)
    scaling = prop_def(FloatAttr)
    assembly_format = "$x `,` $inv_freq `->` $cs attr-dict"


@irdl_op_definition
class RopeOp(TileOp):
    """Rotary embedding in place, rotate-half form, per head, with the angles `cs` of
    `rope_angles` for the same rows."""

    name = "wsc.tile.rope"
    x = operand_def(BUF)
    cs = operand_def(BUF)
    heads = prop_def(IntegerAttr)
    head_dim = prop_def(IntegerAttr)
    assembly_format = "$x `,` $cs attr-dict"


@irdl_op_definition
class AttendOp(TileOp):
    """One flash-attention step: fold the K/V rows this PE holds into the online-softmax
    state `(m, l, acc)` of its query rows. Query positions are `pos0 + global row of q`, key
    positions the global row of `k` (after any shifts); `causal` masks keys after the query,
    `window` also keys `window` or more positions before it (a sliding window), and padding
    keys are always masked."""

    name = "wsc.tile.attend"
    q = operand_def(BUF)
    k = operand_def(BUF)
    v = operand_def(BUF)
    m = operand_def(BUF)
    l = operand_def(BUF)  # noqa: E741
    acc = operand_def(BUF)
    scores = operand_def(BUF)  # working memory: one head's [q rows, key rows] block, fp32
    heads = prop_def(IntegerAttr)
    kv_heads = prop_def(IntegerAttr)
    head_dim = prop_def(IntegerAttr)
    scale = prop_def(FloatAttr)
    causal = opt_prop_def(UnitAttr)
    window = opt_prop_def(IntegerAttr)
    assembly_format = "$q `,` $k `,` $v `->` $m `,` $l `,` $acc `scratch` $scores attr-dict"

    def verify_(self) -> None:
        need = (buffer_of(self.q).dims[0], buffer_of(self.k).dims[0])
        _check_scratch(self, self.scores, need, "f32")


@irdl_op_definition
class AttnFinishOp(TileOp):
    """`out = acc / l`, per head."""

    name = "wsc.tile.attn_finish"
    acc = operand_def(BUF)
    l = operand_def(BUF)  # noqa: E741
    out = operand_def(BUF)
    heads = prop_def(IntegerAttr)
    head_dim = prop_def(IntegerAttr)
    assembly_format = "$acc `,` $l `->` $out attr-dict"


@irdl_op_definition
class KvWriteOp(TileOp):
    """Write the rows of `src` into the resident KV `cache` at their positions
    (`pos0 + global row`).

    The cache stripes positions over the region's rows (`position mod rows`, slot
    `position // rows`). When `src` is striped the same way and `pos0` is a multiple of the
    rows (prefill chunks), every row is already on its PE and the write is a local copy; a
    decode step's single row enters at row 0 and is shifted neighbour to neighbour to the row
    whose turn it is, which keeps every PE's share of the cache balanced as it grows.
    """

    name = "wsc.tile.kv_write"
    src = operand_def(BUF)
    cache = operand_def(BUF)
    assembly_format = "$src `->` $cache attr-dict"


@irdl_op_definition
class AdvanceOp(TileOp):
    """`pos0 += tokens`: the next chunk of a chunked prefill starts `tokens` later."""

    name = "wsc.tile.advance"
    tokens = prop_def(IntegerAttr)
    assembly_format = "attr-dict"


# --- fabric collectives ---------------------------------------------------------------


@irdl_op_definition
class ShiftOp(TileOp):
    """Rotate a buffer around the region's ring along `axis` by `by` positions
    (numpy.roll convention). Into `dst` (double buffering: the transfer overlaps compute
    until `dst` is next read), or in place through `staging`: the buffer streams out from its
    start while the neighbour's data streams in behind it, landing in `staging` until the
    bytes it replaces have left, so `staging` holds `SHIFT_STAGING_BYTES` (or the whole buffer,
    if smaller). `interleaved` rings map logical neighbours at most two physical hops apart,
    so the wrap-around costs no more than a step."""

    name = "wsc.tile.shift"
    src = operand_def(BUF)
    dst = opt_operand_def(BUF)
    staging = opt_operand_def(BUF)
    axis = prop_def(IntegerAttr)
    by = prop_def(IntegerAttr)
    interleaved = opt_prop_def(UnitAttr)
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    assembly_format = "$src (`->` $dst^)? (`staging` $staging^)? attr-dict"

    def verify_(self) -> None:
        if (self.dst is None) == (self.staging is None):
            raise VerifyException("shift: either a destination or, in place, a staging buffer")
        if self.staging is not None:
            s = buffer_of(self.src)
            _check_scratch(self, self.staging, (staging_elems(s),), s.dtype_str)


@irdl_op_definition
class AllReduceOp(TileOp):
    """Reduce `buf` across the PEs of each line along `axis` and leave the result on all of
    them: a `levels`-level tree reduce, then a broadcast back."""

    name = "wsc.tile.allreduce"
    buf = operand_def(BUF)
    partner = operand_def(BUF)  # working memory: a partial arriving from the neighbour
    axis = prop_def(IntegerAttr)
    fn = prop_def(StringAttr)  # sum | max
    levels = prop_def(IntegerAttr)
    assembly_format = "$buf `scratch` $partner attr-dict"

    def verify_(self) -> None:
        b = buffer_of(self.buf)
        _check_scratch(self, self.partner, b.dims, b.dtype_str)


@irdl_op_definition
class AttnMergeOp(TileOp):
    """All-reduce of online-softmax states `(m, l, acc)` along `axis` with the log-sum-exp
    merge: decode attention over a KV cache spread over the rows."""

    name = "wsc.tile.attn_merge"
    m = operand_def(BUF)
    l = operand_def(BUF)  # noqa: E741
    acc = operand_def(BUF)
    partner = operand_def(BUF)  # working memory: the neighbour's (m, l, acc), fp32, in a row
    axis = prop_def(IntegerAttr)
    heads = prop_def(IntegerAttr)
    head_dim = prop_def(IntegerAttr)
    levels = prop_def(IntegerAttr)
    assembly_format = "$m `,` $l `,` $acc `scratch` $partner attr-dict"

    def verify_(self) -> None:
        n = sum(math.prod(buffer_of(v).dims) for v in (self.m, self.l, self.acc))
        _check_scratch(self, self.partner, (n,), "f32")


SHIFT_STAGING_BYTES = 256  # the data in flight between a PE's own bytes leaving and its
# neighbour's arriving, in an in-place ring shift: a few dozen wavelets cover the hops' latency


def staging_elems(b: BufferOp) -> int:
    """Elements of staging an in-place shift of `b` needs."""
    per = DTYPE_BYTES[b.dtype_str]
    return min(math.prod(b.dims), max(1, SHIFT_STAGING_BYTES // per))


def _check_scratch(op: Operation, v, need: tuple[int, ...], dtype: str) -> None:
    """A working-memory operand must be a buffer of at least `need` elements of `dtype`."""
    b = buffer_of(v)
    if b.dtype_str != dtype or math.prod(b.dims) < math.prod(need):
        raise VerifyException(
            f"{op.name}: working buffer {b.sym.data} is {b.dims} {b.dtype_str}, the op needs "
            f"{tuple(need)} {dtype}")


TILE_OPS = [
    ProgramOp, RegionOp, ChannelOp, LoopOp, BufferOp, FillOp, CopyOp, SwapOp, SendOp, RecvOp,
    MatmulOp, UnaryOp, BinaryOp, ScalarOp, ReduceOp, GatherOp, PositionsOp, RopeAnglesOp, RopeOp,
    AttendOp,
    AttnFinishOp, KvWriteOp, AdvanceOp, ShiftOp, AllReduceOp, AttnMergeOp,
]

WscTile = Dialect("wsc.tile", TILE_OPS, [BufType, LayoutAttr])


def programs(module: ModuleOp) -> dict[str, ProgramOp]:
    return {op.sym_name.data: op for op in module.ops if isinstance(op, ProgramOp)}


def verify_persistent(module: ModuleOp) -> None:
    """Persistent buffers (weights, KV cache) must be declared alike by every program."""
    seen: dict[tuple[str, str], tuple] = {}
    for prog in programs(module).values():
        for region in prog.regions_():
            for b in region.buffers():
                if b.persistent is None:
                    continue
                key = (region.sym_name.data, b.sym.data)
                sig = (b.dims, b.dtype_str, b.offset_bytes, b.layout, b.weight)
                if seen.setdefault(key, sig) != sig:
                    raise VerifyException(
                        f"persistent buffer {key[1]} of region {key[0]} is declared "
                        f"differently by program {prog.sym_name.data}"
                    )


def verify_on_mesh(module: ModuleOp, width: int, height: int) -> None:
    """What the machine needs beyond each op's own invariants, checked when a program is
    loaded (an edited program with recomputed hashes passes every other check): buffers start
    at a non-negative offset, every region lies inside the `width` x `height` mesh, a region
    sits in the same place in every program, and no two regions share a PE unless they are
    one stack: the same rectangle, their buffers at disjoint offsets."""
    rects: dict[str, tuple[int, int, int, int]] = {}  # region -> (x, y, cols, rows)
    stack_of: dict[str, str] = {}
    spans: dict[str, list[tuple[int, int, str]]] = {}  # stack -> (lo, hi, region) of buffers
    for prog in programs(module).values():
        for region in prog.regions_():
            name = region.sym_name.data
            if region.stack is not None:
                stack_of[name] = region.stack.data
            for b in region.buffers():
                if b.offset_bytes < 0:
                    raise VerifyException(f"region {name}: buffer {b.sym.data} has a negative "
                                          f"offset ({b.offset_bytes})")
                if region.stack is not None and b.nbytes:
                    spans.setdefault(region.stack.data, []).append(
                        (b.offset_bytes, b.offset_bytes + b.nbytes, name))
            (x, y), (rows, cols) = get_ints(region.origin), region.grid
            if x < 0 or y < 0 or x + cols > width or y + rows > height:
                raise VerifyException(f"region {name} ({rows}x{cols} PEs at x={x}, y={y}) lies "
                                      f"outside the {width}x{height} mesh")
            if rects.setdefault(name, (x, y, cols, rows)) != (x, y, cols, rows):
                raise VerifyException(f"region {name} is placed differently by program "
                                      f"{prog.sym_name.data}")
    placed = sorted(rects.items(), key=lambda item: item[1][0])  # by x: a sweep, not all pairs
    for i, (a, (ax, ay, aw, ah)) in enumerate(placed):
        for b, (bx, by, bw, bh) in placed[i + 1:]:
            if bx >= ax + aw:
                break
            shared = a in stack_of and stack_of[a] == stack_of.get(b)
            if shared and (ax, ay, aw, ah) != (bx, by, bw, bh):
                raise VerifyException(f"regions {a} and {b} are one stack but placed on "
                                      "different rectangles")
            if by < ay + ah and ay < by + bh and not shared:
                raise VerifyException(f"regions {a} and {b} are placed on the same PEs")
    for stack, held in spans.items():
        held.sort()
        end, owner = 0, ""
        for lo, hi, name in held:
            if lo < end and name != owner:
                raise VerifyException(f"stack {stack}: regions {owner} and {name} hold the same "
                                      f"bytes of SRAM (offset {lo})")
            if hi > end:
                end, owner = hi, name
