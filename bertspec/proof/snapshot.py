"""A syrupy extension that stores tensors as readable, stable text.

A tensor becomes ``float32 (2, 5)`` plus its values rounded to ``DECIMALS``
places; an exact zero (either sign) is written ``0.0``, a value that merely
rounds to zero ``0.0000``, so masked entries stand out. Two runs can still differ in the last
rounded digit (thread count and platform change summation order), so matching
compares numbers within one rounding step instead of character by character.
"""

import math
import re

import torch
from syrupy.extensions.amber import AmberSnapshotExtension

DECIMALS = 4
_NUMBER = re.compile(r"-?\d+\.\d+(?:e[+-]\d+)?|-?inf|nan")


def _number(x: float) -> str:
    if x == 0:
        return "0.0"  # exactly zero, also -0.0: the sign of zero depends on the code path, not the model
    if math.isfinite(x) and abs(x) >= 1e4:
        return f"{x:.{DECIMALS}e}"
    return f"{x:.{DECIMALS}f}" if math.isfinite(x) else str(x)


def tensor_text(t: torch.Tensor) -> str:
    t = t.detach().cpu()
    values = t.to(torch.float64) if t.is_floating_point() else t.to(torch.int64)
    if values.dim() == 0:
        body = _number(values.item()) if t.is_floating_point() else str(values.item())
    else:
        rows = values.reshape(-1, values.shape[-1]).tolist()
        body = "\n".join(" ".join(_number(v) if t.is_floating_point() else str(v) for v in row) for row in rows)
    return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}\n{body}"


def plain(data):
    """Tensors to text, recursively through dicts, lists and tuples."""
    if isinstance(data, torch.Tensor):
        return tensor_text(data)
    if isinstance(data, float):
        return _number(data)
    if isinstance(data, dict):
        return {k: plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [plain(v) for v in data]
    return data


def _close(a: str, b: str) -> bool:
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y) or math.isinf(x) or math.isinf(y):
        return a == b
    step = 10.0 ** -DECIMALS
    return abs(x - y) <= 1.5 * step + 1.5 * step * max(abs(x), abs(y))


class TensorSnapshotExtension(AmberSnapshotExtension):
    def serialize(self, data, **kwargs):
        return super().serialize(plain(data), **kwargs)

    def matches(self, *, serialized_data, snapshot_data) -> bool:
        a, b = str(serialized_data), str(snapshot_data)
        if _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
            return False
        return all(_close(x, y) for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b)))
