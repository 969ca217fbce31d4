"""Measuring cost: FLOPs from a config, calls that wait for the device, peak memory,
and the ratios of a pytest-benchmark run.

A time measured on one machine says little on another, and on a shared machine
little even on the same one; a ratio of two times taken in the same run says
more. So every benchmark names its measurement (``extra_info["key"]``) and,
where it has one, what it is a fraction of (``extra_info["vs"]``): another
benchmark's key, or a baseline the test timed round by round beside its own
rounds (``extra_info["baseline_seconds"]``). :func:`add_ratios` (called from
conftest's ``pytest_benchmark_update_json``) divides the best rounds and writes
the ratios into the saved JSON.
"""

import ctypes
import ctypes.util
import json
import math
from pathlib import Path

import torch

# The least-disturbed round: other processes can only ever add time to a round.
STATISTIC = "min"


def forward_flops(config, batch: int, length: int) -> int:
    """Matrix-multiply FLOPs of one BertForMaskedLM forward (2 per multiply-add), from the config alone.

    Every position is computed, padded or not. Element-wise work (softmax,
    GELU, LayerNorm, additions) is left out, as torch's FlopCounterMode does.
    """
    h, ff, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    tokens = batch * length
    per_layer = (
        2 * tokens * h * 3 * h  # query, key, value
        + 2 * 2 * batch * length * length * h  # q·kᵀ and probs·v, all heads together
        + 2 * tokens * h * h  # attention output dense
        + 2 * 2 * tokens * h * ff  # feed-forward up and down
    )
    head = 2 * tokens * h * h + 2 * tokens * h * vocab  # transform dense, decoder
    return config.num_hidden_layers * per_layer + head


def wait_for(device) -> None:
    """Block until the device has run everything queued on it: a CUDA call returns before its kernels have run."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def synchronised(fn, device):
    """``fn`` followed by a wait for the device, so that a timing covers the work and not just its launch."""
    if torch.device(device).type != "cuda":
        return fn

    def call(*args, **kwargs):
        result = fn(*args, **kwargs)
        torch.cuda.synchronize()
        return result

    return call


PEAK_MEMORY_METHOD = {
    "cpu": "peak resident memory during the call (Linux VmHWM, reset just before it, after malloc_trim "
           "returned freed heap pages) minus resident memory before it",
    "cuda": "torch.cuda.max_memory_allocated during the call minus memory_allocated before it",
}


def peak_memory(fn, device):
    """(bytes the call needed at its peak beyond what was held before it, fn's result).

    tracemalloc does not see torch's allocator. On CUDA, torch's own allocator
    statistics say it; on CPU, torch allocates from the C heap, so the process's
    peak resident set is read instead (Linux only).
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        result = fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before, result
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc_trim(0)  # freed pages still mapped would hide a new allocation from the resident set
    Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set (VmHWM) to the current one
    before = _proc_status_bytes("VmRSS")
    result = fn()
    return _proc_status_bytes("VmHWM") - before, result


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def held_bytes(tensors) -> int:
    """Bytes of memory the tensors hold, each storage counted once (views share their base's)."""
    storages = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[(storage.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


# ---- ratios in the saved JSON ----

def add_ratios(output_json: dict) -> list[dict]:
    """Write each benchmark's ratio into its extra_info, and all ratios into ``output_json["bertspec"]``.

    Per benchmark, from its ``extra_info``:
      ``flops``: ``flop_per_s`` = flops / best round;
      ``vs`` (what it is compared with) and ``ratio_name``: ``ratio`` = best round / the baseline's
      best round, the baseline's rounds being ``baseline_seconds`` when the test interleaved them
      with its own, else those of the benchmark whose key is ``vs``; with ``baseline_flops`` the
      ratio is of throughputs instead: flop_per_s / the baseline's FLOP/s;
      ``target`` ({"at_most": x}, {"at_least": x} or both): ``meets_target``, and where it is
      missed, ``missed_because``: the test's ``reason_if_missed``, what that cost is made of;
      ``ratios`` (name -> value): ratios the test measured itself (memory), passed through, each
      with its target where ``ratio_targets`` (name -> target) names one.
    """
    benchmarks = {b["extra_info"]["key"]: b for b in output_json["benchmarks"] if "key" in b["extra_info"]}
    rows = []
    for bench in benchmarks.values():
        info, best = bench["extra_info"], bench["stats"][STATISTIC]
        if "flops" in info:
            info["flop_per_s"] = info["flops"] / best
        baseline = _baseline_best(info, benchmarks)
        if baseline is not None:
            if "baseline_flops" in info:
                info["ratio"] = info["flop_per_s"] / (info["baseline_flops"] / baseline)
            else:
                info["ratio"] = best / baseline
            row = _row(bench, info["ratio_name"], info["ratio"], info["vs"], "baseline_seconds" in info)
            if "target" in info:
                info["meets_target"] = _judge(row, info["target"], info.get("reason_if_missed"))
            rows.append(row)
        for name, value in info.get("ratios", {}).items():
            row = _row(bench, name, value, None, True)  # both sides measured within the test
            if name in info.get("ratio_targets", {}):
                _judge(row, info["ratio_targets"][name], info.get("reason_if_missed"))
            rows.append(row)
    output_json["bertspec"] = {"statistic": STATISTIC, "ratios": rows}
    return rows


def meets(value: float, target: dict) -> bool:
    return target.get("at_least", -math.inf) <= value <= target.get("at_most", math.inf)


def _judge(row: dict, target: dict, reason: str | None) -> bool:
    row["target"] = target
    row["meets_target"] = meets(row["value"], target)
    if not row["meets_target"]:
        row["missed_because"] = reason
    return row["meets_target"]


def _baseline_best(info, benchmarks) -> float | None:
    if info.get("baseline_seconds"):
        return min(info["baseline_seconds"])  # the same statistic as pytest-benchmark's "min"
    baseline = benchmarks.get(info.get("vs"))
    return None if baseline is None else baseline["stats"][STATISTIC]


def _row(bench, name, value, baseline, side_by_side) -> dict:
    return {"group": bench["group"], "measurement": bench["extra_info"]["key"], "ratio": name, "value": value,
            "baseline": baseline, "side_by_side": side_by_side, "target": None, "meets_target": None,
            "missed_because": None}


def latest_saved_run(storage: str) -> tuple[Path, dict] | None:
    """The newest run in pytest-benchmark's file storage that carries bertspec's ratios, or None."""
    folder = Path(storage.removeprefix("file://"))
    runs = []
    for path in folder.glob("*/*.json"):
        run = json.loads(path.read_text(encoding="utf-8"))
        if "bertspec" in run:
            runs.append((run["datetime"], path, run))
    if not runs:
        return None
    _, path, run = max(runs, key=lambda r: r[0])
    return path, run
