"""A trace's summary values: four sums per step, written into one table and read back to the host once per forward.

On the CPU a contiguous float32 tensor is summed in one fused pass (bertspec/tracing/_moments.c, optional: built
where a C compiler was at install), anything else by torch's reductions on the tensor's device.
spec/test_p1_3_output_format.py checks the values against float64 reductions, with and without the extension.
"""

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # a trace's record; trace.py imports this module
    from bertspec.tracing.trace import Step

try:  # the optional extension (pyproject.toml); without it every step takes torch's three passes
    from bertspec.tracing import _moments as compiled
    MOMENTS_MISSING = None
except ImportError as missing:  # not built (no C compiler at install), or a CPU without AVX2
    compiled, MOMENTS_MISSING = None, str(missing)
fused_moments = None if compiled is None else compiled.moments
# Large tensors are summed on the threads torch runs its own kernels on, where torch runs them with OpenMP.
ON_TORCHS_THREADS = (compiled is not None and "parallel backend: OpenMP" in torch.__config__.parallel_info()
                     and compiled.use_threads_of(torch._C.__file__))
SHARED_FROM = None if compiled is None else compiled.PARALLEL_MIN  # values from which a pass is shared among threads


class Statistics:
    """Every step's sums, written into one table on the tensors' device and read back to the host once per forward.

    Reading a value back (``.item()``) waits for the device — on CUDA for every
    kernel queued before — and is a Python round trip; four per step over some
    200 steps cost more than the sums. So each step writes its four sums (sum,
    sum of squares, min, max) into a row of a table, and :meth:`settle`, at the
    end of the forward, reads the table with one ``.tolist()`` per dtype. The
    table is allocated before the forward's own tensors: some 800 small results
    kept alive among them instead would fragment the heap, and the forward's
    large blocks would come from freshly faulted pages (30 000 faults at batch 8).

    A contiguous float32 tensor on the CPU — nearly every step — is summed by
    :data:`fused_moments`: one read of its values instead of torch's three (one
    share per thread of torch's OpenMP team from 32 768 values on), the sums
    accumulated in float64 and written straight into the float64 table.
    """

    def __init__(self):
        self._tables = {}  # (device, dtype) -> a (rows, 4) table of sums
        self._rows = {}  # (device, dtype) -> its table's rows (len() of a tensor is a Python call)
        self._addresses = {}  # (device, dtype) -> its table's address, where fused_moments writes
        self._used = {}  # (device, dtype) -> rows written in this forward
        self._pending = []  # (step, element count, its table's key, its row)
        self._last = None  # (value, its version, key, row): the next step is often the same tensor

    def add(self, step: "Step", value: torch.Tensor, wide: bool) -> None:
        # Consecutive steps can be one tensor (a module returning its last child's
        # output; scores and scores + mask when no mask was added): summed once.
        last = self._last
        if last is not None and last[0] is value and last[1] == value._version:
            key, row = last[2], last[3]
        else:
            key, row = self._sum(value, wide)
            self._last = (value, value._version, key, row)
        self._pending.append((step, value.numel(), key, row))

    def _sum(self, t: torch.Tensor, wide: bool) -> tuple:
        """Write t's four sums into a free row of a table; return (the table's key, the row)."""
        if fused_moments is not None and t.dtype is torch.float32 and t.is_cpu and t.is_contiguous() and t.numel():
            row = self._next_row(FUSED)
            if not fused_moments(t.data_ptr(), t.numel(), self._addresses[FUSED] + row * FUSED_ROW_BYTES):
                # inf or NaN among the values: torch's min and max propagate NaN, the fused lanes do not.
                torch.stack(_sums(t.detach().to(torch.float64)), out=self._tables[FUSED][row])
            return FUSED, row
        t = _summable(t.detach(), wide)
        key = (t.device, t.dtype)
        row = self._next_row(key)
        torch.stack(_sums(t), out=self._tables[key][row])
        return key, row

    def _next_row(self, key) -> int:
        """A free row of key's table; a full table is doubled (256 rows hold one BERT forward)."""
        used = self._used.get(key, 0)
        if used == self._rows.get(key, 0):
            grown = torch.empty(max(2 * used, 256), 4, dtype=key[1], device=key[0])
            if used:
                grown[:used] = self._tables[key]
            self._tables[key], self._rows[key], self._addresses[key] = grown, len(grown), grown.data_ptr()
        self._used[key] = used + 1
        return used

    def settle(self) -> None:
        self._last = None
        values = {key: self._tables[key][:used].tolist() for key, used in self._used.items()}
        for step, n, key, row in self._pending:
            step.mean, step.std, step.min, step.max = _moments(n, *values[key][row])
        self._pending.clear()
        self._used.clear()


FUSED = (torch.device("cpu"), torch.float64)  # the table fused_moments writes into
FUSED_ROW_BYTES = 4 * 8  # a row of four float64 sums


def _summable(t: torch.Tensor, wide: bool) -> torch.Tensor:
    """t itself, or a float64 copy where float32 sums would overflow or round (torch's reductions).

    float32 and float64 are summed in their own dtype, without a copy: a copy
    costs more than the three passes that only read. ``wide`` values — the
    additive mask and the scores it was added to, which hold finfo.min by
    design — are summed in float64: n × finfo(float32).min overflows a float32
    sum, and finfo.min² any float32 sum of squares. Integers, booleans and half
    precision are copied to float64 too (exact sums; they are small or rare).
    """
    return t.to(torch.float64) if wide or t.dtype not in (torch.float32, torch.float64) else t


def _sums(t: torch.Tensor) -> tuple:
    """(sum, sum of squares, min, max) of t, as 0-d tensors on its device; nothing is read back here."""
    x = t.reshape(-1)
    if x.numel() <= CHUNK:
        return _chunk_sums(x)
    total, squares, low, high = (torch.stack(column) for column in zip(*map(_chunk_sums, x.split(CHUNK))))
    return total.sum(), squares.sum(), low.min(), high.max()


CHUNK = 2**20  # values: 4 MiB of float32, which stays in cache between the three passes


def _chunk_sums(x: torch.Tensor) -> tuple:
    """The three read passes over one chunk; a tensor larger than CHUNK is summed chunk by chunk.

    Chunk by chunk, the second and third pass read from cache what the first
    brought in: a batch of logits (86 MiB at batch 8) is summed in half the
    time. And a float32 BLAS dot's lanes add sequentially, so its error grows
    with its length: 3e-6 at 2²⁰ values, 2e-4 at 2²⁴.
    """
    low, high = torch.aminmax(x)
    return x.sum(), torch.dot(x, x), low, high


def _moments(n: int, total: float, squares: float, low: float, high: float) -> tuple:
    """(mean, std, min, max) from the sums, in Python's float64; std with Bessel's correction, as torch.std."""
    mean = total / n
    var = (squares - total * mean) / (n - 1) if n > 1 else 0.0
    # Rounding can leave a constant tensor a variance of -1e-17; -inf values leave nan, as torch.std does.
    std = var if math.isnan(var) else math.sqrt(max(var, 0.0))
    return mean, std, low, high
