"""Chapter P4.2b — what recording a forward costs: each way of tracing timed against the plain
forward it records, the memory a trace holds, and the tracer's peers, nnsight and
TransformerLens (bertspec.tracing.peers), timed the same way.

The benchmarks here work as P4.2a's do (spec/test_p4_2a_mask_cost.py): skipped by the
plain spec run, run by ``pytest --benchmark-only``; each asserts that what it times
computes the right thing, then records its timing as a ratio within the run, on the
bert-base-chinese-sized models of bertspec.proof.benchmarks (conftest's ``subjects``).
Measured figures are in README's Benchmarks section.
"""

import time
from dataclasses import dataclass, field
from functools import partial

import pytest
import torch

from bertspec.proof import cost
from bertspec.proof.benchmarks import (IMPLEMENTATIONS, Shape, forward_key, group, logits, skip_unless_chosen,
                                       this_runs_ratios, timed)
from bertspec.tracing import statistics as summing
from bertspec.tracing.peers import NnsightSaveAll, TransformerLensCache
from bertspec.tracing.trace import INTERNALS, quantity, trace_forward


# ---- the tracer: time and memory, beside its peers ----

TRACER_SHAPES = (Shape(1, 128, False), Shape(8, 128, False))


@dataclass(frozen=True)
class Way:
    """One way of recording a forward pass, timed round by round against the plain forward it records."""

    name: str  # the ratio is "<name> ÷ plain"
    target: float | None  # the ratio's aim (at most), or None: measured and reported only
    reason_if_missed: str  # what its cost is made of, written into the JSON beside a missed target
    implementations: tuple = IMPLEMENTATIONS
    options: dict = field(default_factory=dict)  # bertspec's: keyword options of trace_forward
    shapes: tuple = TRACER_SHAPES
    peer: type | None = None  # a peer's: its recorder, built from (model, batch, checkpoint folder, tokenizer)

    def __str__(self):
        return self.name

    @property
    def id(self) -> str:
        return self.name.removeprefix("traced (").removesuffix(")").replace(", ", "-").replace(" ", "-")


# What each way's cost is made of, written into the JSON beside a missed aim; the figures measured
# are in README's Benchmarks section ("What the costs are made of").
HOOKS_COST = ("a Python hook call and a record per step (143 hooks on BERT; a norm's input and output from one), a "
              "torch function mode that sees the calls inside attention after q, k and v (12 of some 20 a layer), and "
              "opening the tracer (the hooks registered, then removed): a fixed cost per forward, of the size of the "
              "spread of the plain forward's own rounds on a shared machine (measured: README, Benchmarks)")
SUMMED_BY = ("one read pass per step, shared among torch's threads (bertspec.tracing._moments)" if summing.ON_TORCHS_THREADS
             else "one read pass per step, on one thread (bertspec.tracing._moments)" if summing.fused_moments is not None
             else "torch's three read passes per step (bertspec.tracing._moments is not built here)")
VALUES_READ = ("about 32 M values per sequence of 128 at bert-base size (every sublayer's output, the LayerNorm inputs, "
               "the attention matrices, the logits: 128 MB of float32)")
PASSES_COST = (
    f"{SUMMED_BY} over {VALUES_READ}, and a Python call per step; on top of the shapes-only cost, and within the "
    "spread of the plain forward's own rounds (measured: README, Benchmarks)"
    if summing.ON_TORCHS_THREADS else
    f"{SUMMED_BY} over {VALUES_READ}, half of each tensor read from the other core's cache; on top of the "
    "shapes-only cost (measured: README, Benchmarks)"
    if summing.fused_moments is not None else
    f"{SUMMED_BY} over {VALUES_READ}: the compiled one-pass summary needs a C compiler at install and a CPU with "
    "AVX2 (measured: README, Benchmarks)")
HOLDING_COST = ("fresh memory for every kept tensor: the allocator cannot reuse what the trace holds, so the kernel maps "
                "and zeroes new pages; on top of the shapes-only cost, since a full trace computes its summaries when "
                "first read (measured: README, Benchmarks)")
TRACER_WAYS = [
    Way("traced (shapes only)", 1.03, HOOKS_COST, options={"summaries": False}),
    Way("traced (summaries)", 1.05, PASSES_COST, options={"derive": False}),
    Way("traced (full tensors)", 1.10, HOLDING_COST, options={"keep_tensors": True, "derive": False}),
    Way("traced (summaries, derived scores and probabilities)", None, "", ("sdpa",), shapes=TRACER_SHAPES[:1]),
    Way("traced (only attention_mask and probs)", None, "", options={"only": ("attention_mask", "probs")},
        shapes=TRACER_SHAPES[:1]),
]
MEMORY_SHAPE = Shape(1, 512, False)
HELD_RATIO = "peak memory: full tensors ÷ (plain + held)"
READ_RATIO = "traced (full tensors), then its summaries read ÷ plain"
TRACED = [(way, implementation, shape) for way in TRACER_WAYS for implementation in way.implementations
          for shape in way.shapes]


def tracer_rounds(shape: Shape) -> dict:
    """Rounds of a traced forward and its plain one: 8 at batch 1 (0.3 s a forward on 2 cores), 3 at batch 8 (2 s).

    No warm-up round: the test's own first traced and plain forwards, run to
    check the logits, have warmed both, so every forward the run pays for is a
    measured round.
    """
    return {"rounds": 8, "warmup_rounds": 0} if shape.batch == 1 else {"rounds": 3, "warmup_rounds": 0}


def assert_bit_identical(traced_logits, model, batch):
    """Before any timing: what a recorder returns is exactly the plain forward's logits."""
    plain = logits(model, batch)
    assert torch.equal(traced_logits, plain), f"max |traced - plain| = {(traced_logits - plain).abs().max()}"


@pytest.mark.parametrize(("way", "implementation", "shape"), TRACED, ids=[f"{w.id}-{i}-{s}" for w, i, s in TRACED])
def test_a_traced_forward_gives_the_plain_forwards_logits_at_a_measured_overhead(
        benchmark, subjects, settings, way, implementation, shape, evidence):
    """A traced forward returns bit for bit the plain forward's logits; what each way of tracing adds is measured against its target.

    The tracer only observes: hooks and a torch function mode that call every
    function unchanged, so the logits are identical (asserted before timing).
    Each way is timed round by round beside the plain forward, at batch 1 and
    8, sequence 128, bert-base size; aims for traced ÷ plain: shapes only ≤ 1.03
    (hooks and records), summaries ≤ 1.05 (statistics: on the CPU one read
    pass per step, P1.3, read back once per forward), full tensors ≤ 1.10 (no copies: the
    trace holds the tensors the forward made, and computes their summaries when
    first read: that read is timed too, and its ratio reported). On sdpa,
    deriving scores and probabilities recomputes what the fused kernel skips;
    it is timed on its own at batch 1, as is a step filter (only the masks and
    the probabilities). A missed aim is written into the JSON with what that
    cost is made of.

    Claim ID: P4.2b
    Question: How much does tracing slow a forward pass down?
    问题：trace 会让前向传播慢多少？
    中文：带 trace 的前向返回与普通前向逐位相同的 logits；每种 trace 方式增加的耗时按其目标测量。
    原因：tracer 只观察：钩子与 torch function mode 原样调用每个函数，因此 logits 完全相同（计时前先断言）。
    每种方式与普通前向逐轮交替计时，batch 1 与 8、序列 128、bert-base 规模；traced ÷ plain 的目标：只记形状 ≤ 1.03
    （钩子与记录），摘要 ≤ 1.05（统计量：在 CPU 上每一步只读一遍，见 P1.3，每次前向只读回主机一次），完整张量 ≤ 1.10（不复制：trace
    持有前向自己产生的张量，并在首次读取时才计算摘要：这次读取也计时，其比值一并报告）。在 sdpa 上，推导分数与概率要重算
    融合内核跳过的部分，在 batch 1 单独计时；步骤过滤（只记 mask 与概率）也单独计时。未达到的目标连同其开销的构成写入 JSON。
    """
    skip_unless_chosen(settings, implementation)
    batch = subjects.batch(shape)
    model = subjects.model(implementation)
    run = partial(trace_forward, model, **way.options, **batch.as_kwargs())
    trace, output = run()
    assert_bit_identical(output.logits, model, batch)
    start = time.perf_counter()
    kept = [s.tensor for s in trace.steps if s.tensor is not None]  # the first read: a full trace's summaries now
    read_seconds = time.perf_counter() - start
    target = {} if way.target is None else {"target": {"at_most": way.target}, "reason_if_missed": way.reason_if_missed}
    timed(benchmark, run, settings.device, group_name=group(shape), key=f"{way} {implementation} {shape}",
          baseline=partial(logits, model, batch), vs=forward_key(implementation, shape), ratio_name=f"{way} ÷ plain",
          rounds=tracer_rounds(shape), steps=len(trace), held_bytes=cost.held_bytes(kept), read_seconds=read_seconds,
          summed_by=SUMMED_BY, **target)
    if kept:
        traced, plain = getattr(benchmark.stats.stats, cost.STATISTIC), min(benchmark.extra_info["baseline_seconds"])
        benchmark.extra_info["ratios"] = {READ_RATIO: (traced + read_seconds) / plain}
    values = [s for s in trace if s.shape is not None]
    evidence.table("the traced forward", ["steps", "with statistics", "summed by", "with a tensor kept", "held (MiB)",
                                          "derived"],
                   [(len(trace), sum(s.mean is not None for s in values), SUMMED_BY, len(kept),
                     cost.held_bytes(kept) / 2.0**20, sum(s.source == "derived" for s in trace))])
    evidence.table("this run", ["ratio", "value", "target"], this_runs_ratios(benchmark))
    assert all((s.mean is not None) == way.options.get("summaries", True) for s in values)
    assert len(kept) == (len(values) if way.options.get("keep_tensors") else 0)
    only = way.options.get("only")
    expected = set(INTERNALS) if implementation == "eager" or way.options.get("derive", True) else set()
    found = {quantity(s.name) for s in trace if quantity(s.name) in INTERNALS}
    assert found == (expected & set(only) if only else expected)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_keeping_full_tensors_holds_every_step_in_memory_while_summaries_hold_none(
        benchmark, subjects, settings, implementation, evidence):
    """A trace with full tensors holds every step's tensor in memory; a summaries-only trace holds none and peaks far lower.

    Measured at bert-base size, sequence 512, where the attention matrices
    (scores, scores + mask, probabilities: 3 × 12 heads × 512² floats per
    layer, derived on sdpa) dominate. Method: bertspec.proof.cost.peak_memory — on
    CPU the peak resident memory during the call (Linux VmHWM, reset just
    before it) minus what was resident before; on CUDA torch's
    max_memory_allocated. Held memory is the kept tensors' storages, each
    counted once. The full trace's peak must cover what it holds; the
    summaries' peak must stay below it. The tracer copies nothing, so the full
    trace should peak at no more than the plain forward's peak plus what it
    holds: the aim for peak ÷ (plain peak + held) is at most 1.1. It is below 1
    where the plain peak's largest transients (the attention matrices) are
    among what the trace holds: the two then overlap. Peaks of a plain forward,
    a summaries trace and a full trace go to the JSON with their ratios; the
    full trace's time is benchmarked against the plain forward.

    Claim ID: P4.2b
    Question: How much memory does a trace with full tensors take?
    问题：保留完整张量的 trace 占用多少内存？
    中文：保留完整张量的 trace 在内存中持有每一步的张量；仅摘要的 trace 不持有任何张量，内存峰值低得多。
    原因：在 bert-base 规模、序列 512 下测量，此时注意力矩阵（scores、scores+mask、概率：每层 3×12 个头×512² 个浮点数）
    占主导。方法：bertspec.proof.cost.peak_memory——CPU 上取调用期间的驻留内存峰值（Linux VmHWM，调用前重置）
    减去调用前的驻留内存；CUDA 上用 max_memory_allocated。持有的内存按张量存储计算，每个存储只计一次。
    完整 trace 的峰值必须覆盖其持有量，仅摘要 trace 的峰值必须低于它。tracer 不做任何复制，因此完整 trace 的峰值不应超过
    普通前向的峰值加上其持有量：峰值 ÷（普通峰值 + 持有量）的目标是至多 1.1。当普通前向峰值中最大的临时张量（注意力矩阵）
    本身就在 trace 持有之列时，二者重叠，比值低于 1。
    普通前向、仅摘要 trace 与完整 trace 的峰值连同其比值写入 JSON；完整 trace 的耗时与普通前向对比计时。
    """
    skip_unless_chosen(settings, implementation)
    shape = MEMORY_SHAPE
    batch = subjects.batch(shape)
    model = subjects.model(implementation)
    peaks = {}
    peaks["plain"], _ = cost.peak_memory(partial(logits, model, batch), settings.device)
    peaks["summaries"], (light, _) = cost.peak_memory(partial(trace_forward, model, False, **batch.as_kwargs()), settings.device)
    peaks["full tensors"], (full, _) = cost.peak_memory(partial(trace_forward, model, True, **batch.as_kwargs()), settings.device)
    held = {"summaries": cost.held_bytes(s.tensor for s in light if s.tensor is not None),
            "full tensors": cost.held_bytes(s.tensor for s in full if s.tensor is not None)}
    del light, full
    ratios = {f"peak memory: {mode} ÷ plain": peaks[mode] / peaks["plain"] for mode in ("summaries", "full tensors")}
    ratios[HELD_RATIO] = peaks["full tensors"] / (peaks["plain"] + held["full tensors"])
    timed(benchmark, partial(trace_forward, model, True, **batch.as_kwargs()), settings.device, group_name=group(shape),
          key=f"traced full tensors {implementation} {shape}", baseline=partial(logits, model, batch),
          vs=forward_key(implementation, shape),
          ratio_name="traced (full tensors, at 512) ÷ plain", rounds={"rounds": 2, "warmup_rounds": 0},
          peak_bytes=peaks, held_bytes=held, memory_method=cost.PEAK_MEMORY_METHOD[torch.device(settings.device).type],
          ratios=ratios, ratio_targets={HELD_RATIO: {"at_most": 1.1}},
          reason_if_missed="the traced forward needed memory beyond the plain forward's peak and the tensors it "
                           "holds: a copy, or blocks the allocator kept mapped")
    mib = 2.0**20
    evidence.table(f"peak memory, {shape} ({cost.PEAK_MEMORY_METHOD[torch.device(settings.device).type]})",
                   ["forward", "peak (MiB)", "held by the trace (MiB)"],
                   [(mode, peaks[mode] / mib, held.get(mode, 0) / mib) for mode in peaks])
    evidence.table("this run", ["ratio", "value", "target"], this_runs_ratios(benchmark))
    assert held["summaries"] == 0
    assert peaks["full tensors"] >= held["full tensors"] > 0
    assert peaks["summaries"] < held["full tensors"]


# ---- the tracer's peers: nnsight and TransformerLens, timed the same way ----

PEERS = [Way("nnsight trace, every module saved", None, "", peer=NnsightSaveAll),
         Way("TransformerLens run_with_cache", None, "", ("eager",), peer=TransformerLensCache)]
PEERED = [(way, implementation, shape) for way in PEERS for implementation in way.implementations for shape in way.shapes]


@pytest.fixture(scope="module")
def checkpoint_folder(settings, subjects, tokenizer, tmp_path_factory):
    """A checkpoint folder for TransformerLens's boot_transformers: --bert-model's, or the random model's config and tokenizer."""
    if settings.model_path is not None:
        return settings.model_path
    folder = tmp_path_factory.mktemp("bert-base-config")
    subjects.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("way", "implementation", "shape"), PEERED, ids=[f"{w.id}-{i}-{s}" for w, i, s in PEERED])
def test_the_tracers_peers_give_the_plain_forwards_logits_at_a_measured_overhead(
        benchmark, subjects, settings, checkpoint_folder, tokenizer, way, implementation, shape, evidence):
    """nnsight and TransformerLens, recording the same forward, return its logits bit for bit; their overhead is measured beside bertspec's.

    nnsight (NNsight(model).trace, ``.save()`` of every module output and
    LayerNorm input that bertspec records) and TransformerLens 4
    (``TransformerBridge.boot_transformers(folder, hf_model=model)``, then
    ``run_with_cache`` with every hook) run the same bert-base-sized model on
    the same inputs as the tracer's benchmarks, timed round by round beside the
    same plain forward; the logits are asserted identical before timing. Both
    keep full tensors, so their ratios compare with bertspec's full-tensors
    way. They are an optional extra (``pip install -e .[peers]``); without it
    these benchmarks are skipped and say why.

    Claim ID: P4.2b
    Question: How does bertspec's tracer compare with nnsight and TransformerLens?
    问题：bertspec 的 tracer 与 nnsight、TransformerLens 相比如何？
    中文：nnsight 与 TransformerLens 记录同一次前向时逐位返回其 logits；它们的开销与 bertspec 的并列测量。
    原因：nnsight（NNsight(model).trace，对 bertspec 记录的每个模块输出与 LayerNorm 输入调用 .save()）与 TransformerLens 4
    （TransformerBridge.boot_transformers(folder, hf_model=model)，再用全部钩子 run_with_cache）在与 tracer 基准相同的
    bert-base 规模模型和输入上运行，与同一个普通前向逐轮交替计时；计时前先断言 logits 相同。二者都保留完整张量，
    因此其比值应与 bertspec 的完整张量方式比较。它们是可选依赖（pip install -e .[peers]）；未安装时这些基准被跳过并说明原因。
    """
    skip_unless_chosen(settings, implementation)
    batch = subjects.batch(shape)
    model = subjects.model(implementation)
    peer = way.peer(model, batch, checkpoint_folder, tokenizer)
    records, out = peer(batch)
    assert_bit_identical(out, model, batch)
    held = cost.held_bytes(peer.held(records))
    timed(benchmark, partial(peer, batch), settings.device, group_name=group(shape), key=f"{way} {implementation} {shape}",
          baseline=partial(logits, model, batch), vs=forward_key(implementation, shape), ratio_name=f"{way} ÷ plain",
          rounds=tracer_rounds(shape), records=len(records), held_bytes=held)
    evidence.table(str(way), ["records", "held (MiB)"], [(len(records), held / 2.0**20)])
    evidence.table("this run", ["ratio", "value", "target"], this_runs_ratios(benchmark))
