"""Chapter P1.3 — the record format: every step's record has the same fields (step name, shape,
dtype, summary statistics), and every summary equals a float64 reduction, even for the
finfo.min mask, with the compiled one-pass summary (bertspec.tracing._moments) or without it.
"""

import math

import pytest
import torch

from bertspec.tracing import statistics as summing
from bertspec.tracing.statistics import Statistics
from bertspec.tracing.trace import Step


def test_every_step_record_has_the_same_fields(bert, evidence):
    """Every step is a record with the same fields: name, shape, dtype, mean, std, min, max, source, tensor.

    One record type for every step makes traces comparable across layers,
    models and versions. Summaries are sums reduced in the tensor's own dtype,
    except where a float32 sum would overflow — the mask and the scores it was
    added to, full of finfo(float32).min, are summed in float64 — and are the
    same whether or not the tensor is kept; only the value None (no mask built)
    has no statistics.

    Claim ID: P1.3
    Question: What fields does each recorded step have?
    问题：每一步的记录包含哪些字段？
    中文：每一步都是字段相同的记录：名称、形状、dtype、均值、标准差、最小值、最大值、来源、张量。
    原因：统一的记录类型让不同层、不同模型、不同版本的 trace 可以比较。统计量按张量自身的 dtype 归约求和，
    只有 float32 求和会溢出之处例外——满是 finfo(float32).min 的 mask 及加上它的分数用 float64 求和——且与是否保留张量无关；
    只有 None 值（没有构造 mask 时）没有统计量。
    """
    batch = bert.example()
    kept, _ = bert.trace(batch, keep_tensors=True)
    light, _ = bert.trace(batch, keep_tensors=False)
    fields = list(Step.__dataclass_fields__)
    evidence.table("a record", fields[:-1], [[getattr(kept.steps[5], f) for f in fields[:-1]]])
    assert fields == ["name", "shape", "dtype", "mean", "std", "min", "max", "source", "tensor"]
    assert kept.names() == light.names()
    for a, b in zip(kept, light):
        assert b.tensor is None and a.source in ("observed", "derived")
        # str(): a derived sdpa step may hold -inf, whose std is nan, and nan != nan
        assert str((a.shape, a.dtype, a.mean, a.std, a.min, a.max)) == str((b.shape, b.dtype, b.mean, b.std, b.min, b.max))
        if a.shape is None:
            assert a.tensor is None and a.mean is None
        else:
            assert tuple(a.tensor.shape) == a.shape and all(v is not None for v in (a.mean, a.std, a.min, a.max))


def float64_summary(t: torch.Tensor) -> tuple:
    """(mean, std, min, max) of a tensor computed the slow way: a float64 copy, torch's own reductions."""
    x = t.double()
    return x.mean().item(), x.std().item(), x.min().item(), x.max().item()


def summary_error(got: tuple, want: tuple) -> float:
    """The largest error of a summary (mean, std, min, max) against float64's, each relative to the larger of
    itself and the finite ones of |mean| and std; a value float64 gives as non-finite must be exactly that."""
    finite = [v for v in want[:2] if math.isfinite(v)]
    scale = max([abs(v) for v in finite] + [1e-30])
    errors = [abs(g - w) / max(abs(w), scale) if math.isfinite(w) else (0.0 if str(g) == str(w) else math.inf)
              for g, w in zip(got, want)]
    return max(errors)


def test_every_summary_matches_a_float64_reduction_even_for_the_finfo_min_mask(bert, evidence):
    """Every step's mean, std, min and max equal float64's within 1e-5, the mask full of finfo(float32).min included.

    A summary is four sums per step, read back to the host once per forward.
    On the CPU a float32 step is summed in one pass with float64 accumulators
    (bertspec/tracing/_moments.c; the next claim): no float32 square or sum can
    overflow them. Without that extension, or on another device or dtype,
    torch reduces the tensor in its own dtype, and the steps that hold the
    additive mask — n × finfo(float32).min overflows a float32 sum — and integer
    and boolean steps are summed in float64. On the padded batch, every step is
    compared with a float64 copy of its kept tensor reduced by torch (std with
    Bessel's correction): within 1e-5 of the larger of |value| and the std, and
    non-finite exactly where float64's is (a derived -inf).

    Claim ID: P1.3
    Question: Are the trace's summary values exact enough to quote, even for a mask of finfo.min?
    问题：trace 的摘要数值足够准确吗？满是 finfo.min 的 mask 也一样吗？
    中文：每一步的均值、标准差、最小值、最大值与 float64 的结果相差不超过 1e-5，满是 finfo(float32).min 的 mask 也不例外。
    原因：摘要是每一步的四个和，每次前向只读回主机一次。在 CPU 上，float32 步骤用 float64 累加器一次读完求和
    （bertspec/tracing/_moments.c，见下一条），float32 的平方与和都不会让它溢出。没有这个扩展、或在其他设备与 dtype 上，
    torch 按张量自身的 dtype 归约；持有加性 mask 的步骤（n × finfo(float32).min 会让 float32 求和溢出）以及整数与布尔步骤用
    float64 求和。在带 padding 的 batch 上，每一步都与其保留张量的 float64 副本经 torch 归约的结果比较（标准差带 Bessel 校正）：
    误差在 |值| 与标准差二者较大者的 1e-5 以内，且仅在 float64 结果非有限处（推导出的 -inf）非有限。
    """
    trace, _ = bert.trace(bert.example())
    rows, worst = [], 0.0
    for step in trace:
        if step.shape is None:
            continue
        expected = float64_summary(step.tensor)
        error = summary_error((step.mean, step.std, step.min, step.max), expected)
        worst = max(worst, error)
        assert error <= SUMMARY_ERROR, (step.name, (step.mean, step.std, step.min, step.max), expected)
        if step.name.endswith((":attention_mask", ":scores+mask")):
            rows.append((step.name, step.dtype, step.mean, expected[0], step.min))
    evidence.table("steps that hold the mask: trace vs float64", ["step", "dtype", "mean", "float64 mean", "min"], rows[:6])
    evidence.table("all steps", ["steps compared", "largest relative error"], [(len(trace), worst)])


SUMMARY_ERROR = 1e-5  # P1.3's bound, relative to the larger of |value| and the spread


def edge_cases() -> dict[str, tuple[torch.Tensor, bool, str | None]]:
    """name -> (float32 values, recorded wide as a mask is, why torch's float32 passes cannot summarise them or None).

    Lengths around the one-pass loop's stride of 16 values, and beyond the 32 768 from which the pass is
    shared among torch's threads; the values a trace meets at its edges: a padding mask, finfo.min and
    finfo.max, subnormals, a constant, a spread far smaller than the mean, inf, nan and a -inf masked score.
    """
    g = torch.Generator().manual_seed(0)
    f32 = torch.finfo(torch.float32)
    every_third = torch.arange(1000) % 3 == 0
    squares = "float32 squares of finfo.max overflow torch's float32 sum of squares"
    spread = "variance / mean² = 1e-9, below the 6e-8 relative rounding of a float32 sum of squares"
    cases = {f"{n} random values": (torch.randn(n, generator=g), False, None) for n in (2, 15, 16, 17, 33, 1000)}
    cases["2²⁰ + 3 random values"] = (torch.randn(2**20 + 3, generator=g), False, None)
    cases["a padding mask: 0 and finfo.min"] = (torch.where(every_third, f32.min, 0.0), True, None)
    cases["finfo.min everywhere"] = (torch.full((100,), f32.min), True, None)
    cases["±finfo.max"] = (torch.where(every_third, f32.max, -f32.max), False, squares)
    cases["subnormal values"] = (torch.randn(100, generator=g) * f32.smallest_normal / 8, False, None)
    cases["a constant, 0.1"] = (torch.full((1000,), 0.1), False, None)
    cases["1000 + 0.03 × N(0, 1)"] = (1000 + 0.03 * torch.randn(1000, generator=g), False, spread)
    shared = (summing.SHARED_FROM or 32_768) + 7_000
    for value, n in ((math.inf, 1000), (math.nan, 1000), (math.nan, shared)):
        x = torch.randn(n, generator=g)
        x[n // 2 + 10] = value  # in the second half: the second thread's share where the pass is shared
        cases[f"{n} values, one of them {value}"] = (x, False, None)
    scores = torch.randn(1000, generator=g).masked_fill(every_third, -math.inf)
    cases["scores with -inf where masked"] = (scores, True, None)
    return cases


def summarised(values: torch.Tensor, wide: bool) -> tuple:
    """(mean, std, min, max) as the tracer records them: one step through the tracer's own statistics."""
    statistics, step = Statistics(), Step("values", tuple(values.shape), "float32")
    statistics.add(step, values, wide)
    statistics.settle()
    return step.mean, step.std, step.min, step.max


def edge_case_errors(monkeypatch, fused: bool) -> list[tuple]:
    """(case, values, largest error, why torch's passes fail it) for every edge case, on one summing path."""
    with monkeypatch.context() as patch:
        if not fused:
            patch.setattr(summing, "fused_moments", None)
        return [(name, values.numel(), summary_error(summarised(values, wide), float64_summary(values)), limit)
                for name, (values, wide, limit) in edge_cases().items()]


def test_one_pass_over_a_float32_tensor_gives_float64s_summary_on_every_edge_case(bert, monkeypatch, evidence):
    """The compiled one-pass summary equals float64's on every edge a trace meets, and sums every float32 step of a trace.

    torch summarises a tensor in three passes (aminmax, sum, dot); inside a
    forward each re-reads memory the forward has moved on from, some 7 % of a
    bert-base forward at batch 1 (P4.2b). bertspec/tracing/_moments.c reads each value
    once, 8 at a time (AVX2), from 32 768 values on shared among the threads
    torch's OpenMP team runs its own kernels on: sum and sum of squares in
    float64 lanes, where a float32 square is exact and no float32 input can
    overflow, min and max in float32 lanes, exact. inf or nan make the sums
    non-finite; the step is then summed by torch, whose min and max propagate
    nan as float64's do. Checked
    on lengths around the loop's stride and on every edge value, against a
    float64 copy reduced by torch; and every float32 step of the bundled
    model's trace goes through the one pass. Skipped where the optional
    extension did not build (no C compiler, or a CPU without AVX2).

    Claim ID: P1.3
    Question: Is the fast one-pass summary as exact as a float64 reduction?
    问题：一次读完的快速摘要和 float64 归约一样准确吗？
    中文：编译的一次读完摘要在 trace 遇到的每种边界情况上都等于 float64 的结果，并且 trace 的每个 float32 步骤都由它求和。
    原因：torch 用三遍（aminmax、sum、dot）汇总张量；在前向中每一遍都要重读前向已经离开的内存，约占 bert-base 在 batch 1
    的前向的 7%（P4.2b）。bertspec/tracing/_moments.c 每个值只读一次、一次 8 个（AVX2），从 32 768 个值起由 torch 的 OpenMP
    线程组分担：和与平方和用 float64 通道累加——float32 的平方在其中是精确的，任何 float32 输入都不会溢出——最小值与最大值用 float32 通道，精确。inf 或 nan 使和非有限，此时该步骤改由 torch
    求和，其最小值与最大值像 float64 一样传播 nan。在循环步长附近的各种长度与每种边界值上与 torch 归约的 float64 副本比较；
    内置模型 trace 的每个 float32 步骤都走这一遍。可选扩展没有编译成功时（没有 C 编译器，或 CPU 没有 AVX2）跳过。
    """
    one_pass = summing.fused_moments
    if one_pass is None:
        pytest.skip(f"the optional extension bertspec.tracing._moments is not built here ({summing.MOMENTS_MISSING}): "
                    "the tracer sums with torch's reductions, checked by the next claim")
    rows = edge_case_errors(monkeypatch, fused=True)
    calls = []
    monkeypatch.setattr(summing, "fused_moments", lambda *args: calls.append(args) or one_pass(*args))
    traced, _ = bert.trace(bert.example(), keep_tensors=True)
    float32_steps = [s for s in traced if s.tensor is not None and s.tensor.dtype == torch.float32]
    evidence.table("one pass against a float64 reduction", ["values", "count", "largest relative error"],
                   [row[:3] for row in rows], note=f"shared among torch's threads from {summing.SHARED_FROM} "
                                                   f"values: {'yes' if summing.ON_TORCHS_THREADS else 'no'}")
    evidence.table("the bundled model's trace", ["float32 steps", "summed in one pass", "other steps"],
                   [(len(float32_steps), len(calls), len(traced) - len(float32_steps))])
    assert all(error <= SUMMARY_ERROR for _, _, error, _ in rows), rows
    assert len(calls) == len(float32_steps)


def test_without_the_compiled_pass_torchs_reductions_give_the_same_summaries(monkeypatch, evidence):
    """Without the compiled pass, torch's reductions give the same summaries on the same edge cases, two of them excepted.

    Where bertspec.tracing._moments is missing (another device, dtype or machine) the
    tracer sums with torch: aminmax, sum and a dot in the tensor's own dtype,
    in float64 for the mask-holding (wide) steps. The same edge cases are
    checked against float64; two are beyond float32 sums of squares and shown,
    not asserted: ±finfo.max, whose squares overflow, and a spread 30 000
    times smaller than the mean, which float32's 7 digits cannot hold. No step
    of the traces this spec checks is like either: before the extension, the
    claim above passed with torch's reductions alone on every checkpoint CI runs.

    Claim ID: P1.3
    Question: Without the compiled pass, are the summaries still exact enough?
    问题：没有编译的那一遍时，摘要仍然足够准确吗？
    中文：没有编译的一遍时，torch 的归约在同样的边界情况上给出同样的摘要，两种情况除外。
    原因：缺少 bertspec.tracing._moments（其他设备、dtype 或机器）时，tracer 用 torch 求和：aminmax、sum 与点积按张量自身的 dtype，
    持有 mask 的（wide）步骤用 float64。同样的边界情况与 float64 比较；有两种超出 float32 平方和的能力，只展示不断言：
    ±finfo.max（平方溢出），以及比均值小三万倍的离散度（float32 的 7 位有效数字容不下）。本规范检查的 trace 中没有这样的步骤：
    在有这个扩展之前，上面那条只用 torch 的归约就在 CI 运行的每个 checkpoint 上通过。
    """
    rows = edge_case_errors(monkeypatch, fused=False)
    evidence.table("torch's passes against a float64 reduction", ["values", "count", "largest relative error", "beyond float32"],
                   [(name, n, error, limit or "") for name, n, error, limit in rows])
    assert all(error <= SUMMARY_ERROR for _, _, error, limit in rows if limit is None), rows
