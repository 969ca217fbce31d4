"""Chapter P4.2a — what masking costs, measured as ratios within one run: transformers' mask
builder and the plan's formula against a forward, and the time padding wastes; the last two
claims show the newest saved run's ratios (of all of P4.2) as a table and a figure, and that
their check catches a ratio its timings do not give.

These are benchmarks: the plain spec run skips them (``--benchmark-skip`` in
pyproject.toml), ``pytest --benchmark-only`` runs them. Each one asserts that
what it times computes the right thing, then records its timing under a key
(``extra_info["key"]``) and, where it is a fraction of another timing, what
that is (``extra_info["vs"]``). Where the two sides could drift apart in time,
the test alternates them round by round and keeps the baseline's rounds
(``extra_info["baseline_seconds"]``); otherwise ``vs`` is the key of another
benchmark. The conftest hook ``pytest_benchmark_update_json`` divides the best
rounds (bertspec.proof.cost.add_ratios) and writes the ratios into the saved
JSON. The harness (inputs, the models measured, timing) is
bertspec.proof.benchmarks; conftest's ``subjects`` fixture holds the models.

The models are bert-base-chinese-sized (random weights unless ``--bert-model``
is given); every input is random token ids, so nothing here depends on what a
model has learned. Benchmark groups are named by input ("cost at
b8-t512-padded"), so pytest-benchmark's table puts a forward, its mask and its
traced or trimmed variants side by side. Measured figures are in README's
Benchmarks section.
"""

import copy
import math
import sys
from functools import partial

import pytest
import torch

from bertspec.handbook.figures import ratio_figure
from bertspec.models import anatomy
from bertspec.models.inputs import Batch
from bertspec.proof import cost
from bertspec.proof.benchmarks import (IMPLEMENTATIONS, MASK_SHAPES, Shape, forward_key, group, logits,
                                       skip_unless_chosen, target_text, this_runs_ratios, timed)
from bertspec.proof.reference import additive_mask
from bertspec.proof.tolerances import TOL
from bertspec.tracing import masks

PADDED_TO_512 = Shape(8, 512, True)


# ---- the mask: transformers' builders and the plan's formula ----

class _Reached(Exception):
    """Raised by a pre-hook to stop a forward at the first self-attention module."""


def first_attention_inputs(model, batch: Batch):
    """(hidden states, mask) that the first self-attention module receives; the encoder itself never runs."""
    a = anatomy.of_model(model)
    (_, first), *_ = a.self_attention_modules(model)
    route = a.route_in(model)

    def stop(module, args, kwargs):
        raise _Reached(args[0] if args else kwargs["hidden_states"], route.mask(module, args, kwargs))

    handle = first.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**batch.as_kwargs())
    except _Reached as reached:
        return reached.args
    finally:
        handle.remove()
    raise AssertionError("the forward never reached a self-attention module")


def transformers_mask_builder(model):
    """The function BertModel turns the 2D mask into the layers' mask with, called as this version's BertModel calls it.

    Read from the module BertModel is defined in, so the version decides:
    5.x: ``create_bidirectional_mask(config=, inputs_embeds=, attention_mask=)`` (BertModel._create_attention_masks);
    4.x sdpa: ``_prepare_4d_attention_mask_for_sdpa(mask, dtype, tgt_len=T)``; 4.x eager:
    ``get_extended_attention_mask(mask, input_shape)``.
    """
    modeling = sys.modules[type(model.bert).__module__]
    if hasattr(modeling, "create_bidirectional_mask"):
        return lambda embeds, mask: modeling.create_bidirectional_mask(
            config=model.config, inputs_embeds=embeds, attention_mask=mask)
    if model.config._attn_implementation == "sdpa":
        return lambda embeds, mask: modeling._prepare_4d_attention_mask_for_sdpa(mask, embeds.dtype, tgt_len=embeds.shape[1])
    return lambda embeds, mask: model.bert.get_extended_attention_mask(mask, mask.shape)


MASK_BUILDERS = ("transformers eager", "transformers sdpa", "formula")
MASKS = [(shape, builder) for shape in MASK_SHAPES for builder in MASK_BUILDERS]


@pytest.mark.parametrize(("shape", "builder"), MASKS, ids=[f"{b.replace(' ', '-')}-{s}" for s, b in MASKS])
def test_the_mask_builder_returns_exactly_what_the_layers_receive_at_a_measured_cost(
        benchmark, subjects, settings, shape, builder, evidence):
    """transformers' mask builder returns exactly the mask every layer receives; its cost is a measured fraction of a forward.

    The timed call is the one BertModel makes in the installed version (see
    transformers_mask_builder), on the embeddings and the 2D mask it would get;
    its result must be the very mask the first self-attention module receives
    (caught by a pre-hook that stops the forward there). The plan's formula,
    ``(1.0 - mask) * finfo.min`` (bertspec.proof.reference.additive_mask), is timed
    too and must allow exactly the real keys. Batch 1 is unpadded (5.x and 4.x
    sdpa skip the mask: the timed cost is the check that decides so), batch 8 is
    padded. The hook records ``mask ÷ forward`` of the same implementation
    (the formula: ÷ the eager forward).

    Claim ID: P4.2a
    Question: How much does building the attention mask cost compared with a forward?
    问题：构造 attention mask 的开销相当于一次前向的多少？
    中文：transformers 的 mask 构造函数返回的正是每一层收到的 mask；其耗时作为一次前向的一部分被测量。
    原因：计时的调用就是所装版本的 BertModel 所做的调用（见 transformers_mask_builder），输入是它会得到的嵌入与二维 mask；
    结果必须与第一个 self-attention 模块实际收到的 mask 完全相同（用在该处中止前向的 pre-hook 捕获）。
    计划中的公式 (1.0 - mask) * finfo.min（bertspec.proof.reference.additive_mask）也被计时，且必须恰好允许真实的 key。
    batch 1 无 padding（5.x 与 4.x sdpa 跳过 mask，计时的是做出这一判断的检查），batch 8 有 padding。
    钩子记录 mask ÷ 同一实现的前向（公式除以 eager 前向）。
    """
    implementation = "eager" if builder == "formula" else builder.removeprefix("transformers ")
    skip_unless_chosen(settings, implementation)
    batch = subjects.batch(shape)
    model = subjects.model(implementation)
    embeds, received = first_attention_inputs(model, batch)
    build = (lambda e, m: additive_mask(m, e.dtype)) if builder == "formula" else transformers_mask_builder(model)
    built = timed(benchmark, partial(build, embeds, batch.attention_mask), settings.device, group_name=group(shape),
                  key=f"mask {builder} {shape}", vs=forward_key(implementation, shape),
                  ratio_name=f"{'formula' if builder == 'formula' else 'mask'} ÷ {implementation} forward",
                  rounds={"rounds": 10, "warmup_rounds": 1, "iterations": 10})
    b, t = batch.input_ids.shape
    evidence.table("the mask", ["builder", "input", "built", "layer 0 received"],
                   [(builder, str(shape), masks.form(built, b, t), masks.form(received, b, t))])
    may_attend = batch.attention_mask.cpu().bool()[:, None, :].expand(b, t, t)
    assert torch.equal(masks.allowed(built, b, t), may_attend)
    if builder != "formula":
        assert (built is None and received is None) or torch.equal(built, received)


# ---- padding waste ----

@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_running_each_sequence_at_its_own_length_gives_the_padded_batchs_logits(
        benchmark, subjects, settings, implementation, evidence):
    """Each sequence run alone at its real length gives the logits it gets in the batch padded to 512; padding's waste is measured.

    The batch holds 8 rows of 64, 128, …, 512 real tokens, padded to 512: 4096
    positions computed for 2304 real tokens. Run trimmed, one sequence at a
    time, only the real tokens are computed. Padded keys get probability
    exactly 0, so the real tokens' logits agree within the float32 kernel
    tolerance (another matrix shape, another summation order). The hook records
    ``each at its length ÷ padded batch``.

    Claim ID: P4.2a
    Question: How much computation does padding waste?
    问题：padding 浪费了多少计算？
    中文：每个序列按真实长度单独运行，得到的 logits 与它在填充到 512 的 batch 中相同；测量 padding 浪费的时间。
    原因：batch 有 8 行，真实长度 64、128、…、512，填充到 512：为 2304 个真实 token 计算了 4096 个位置。
    逐条按真实长度运行只计算真实 token。padding 的 key 概率精确为 0，真实 token 的 logits 在 float32 内核容差内一致
    （矩阵形状不同，求和顺序不同）。钩子记录"按真实长度 ÷ 填充 batch"。
    """
    skip_unless_chosen(settings, implementation)
    shape = PADDED_TO_512
    batch = subjects.batch(shape)
    model = subjects.model(implementation)
    trimmed = [Batch(*(x[i:i + 1, :n] for x in (batch.input_ids, batch.attention_mask, batch.token_type_ids)))
               for i, n in enumerate(shape.lengths())]
    each = timed(benchmark, lambda: [logits(model, row) for row in trimmed], settings.device, group_name=group(shape),
                 key=f"each at its length {implementation} {shape}", baseline=partial(logits, model, batch),
                 vs=forward_key(implementation, shape),
                 ratio_name="each at its length ÷ padded batch", rounds={"rounds": 2, "warmup_rounds": 0},
                 real_tokens=sum(shape.lengths()), positions=shape.batch * shape.length)
    expected = subjects.reference_logits(shape)
    evidence.table("each row alone vs the padded batch (reference)", ["row", "real tokens", "max |diff|"],
                   [(i, n, (out[0] - expected[i, :n]).abs().max()) for i, (n, out) in enumerate(zip(shape.lengths(), each))])
    evidence.table("this run", ["ratio", "value", "target"], this_runs_ratios(benchmark))
    for i, (n, out) in enumerate(zip(shape.lengths(), each)):
        torch.testing.assert_close(out[0], expected[i, :n], **TOL["float32_kernels"])


# ---- the report ----

QUESTIONS = {  # a ratio name (its start) -> the question it answers
    "mask ÷": "mask cost", "formula ÷": "mask cost (the plan's formula)",
    "sdpa ÷ eager": "eager vs sdpa", "reference ÷ eager": "reference vs transformers",
    "each at its length ÷": "padding waste", "traced (": "tracer overhead", "peak memory": "tracer memory",
    "nnsight": "the tracer's peers", "TransformerLens": "the tracer's peers", "FLOP/s ÷": "the machine's limit",
}
OPTIONAL_QUESTIONS = {"the tracer's peers"}  # answered only where the peers extra is installed


def question(ratio_name: str) -> str | None:
    return next((q for start, q in QUESTIONS.items() if ratio_name.startswith(start)), None)


def check_ratios(run: dict) -> set[str]:
    """Assert that every ratio of a saved run follows from its timings; return the questions they answer."""
    rows = run["bertspec"]["ratios"]
    assert rows == cost.add_ratios(copy.deepcopy(run)), "a ratio in the JSON does not follow from the run's timings"
    answered = {question(row["ratio"]) for row in rows}
    assert None not in answered, "a ratio answers none of the chapter's questions"
    assert all(math.isfinite(row["value"]) and row["value"] > 0 for row in rows)
    return answered


def test_the_saved_benchmark_run_reports_every_cost_as_a_ratio_within_that_run(request, evidence):
    """The newest saved benchmark run holds every ratio this chapter asks for, each recomputable from that run's own timings.

    ``pytest --benchmark-only --benchmark-autosave`` saves the run under
    .benchmarks/ with the ratios the conftest hook added (bertspec.proof.cost.add_ratios:
    best round ÷ the baseline's best round, FLOP/s ÷ matmul FLOP/s, and the memory
    ratios measured in the test). This claim reads the newest such run, recomputes
    every ratio from its stats, and shows them as a table and a figure. It is
    skipped when no run was saved or the run covered only part of the chapter.

    Claim ID: P4.2a
    Question: Where do I find a benchmark run's cost ratios, and can I trust them?
    问题：基准运行的开销比值在哪里看？它们可信吗？
    中文：最新保存的基准运行包含本章要求的每个比值，且每个比值都能由该次运行自身的计时重新算出。
    原因：pytest --benchmark-only --benchmark-autosave 把运行结果连同 conftest 钩子添加的比值保存在 .benchmarks/ 下
    （最佳轮次 ÷ 基线最佳轮次、FLOP/s ÷ 矩阵乘 FLOP/s、以及测试中测得的内存比值）。本断言读取最新一次运行，
    由其统计数据重算每个比值，并以表格和图展示。没有保存的运行或运行只覆盖本章一部分时跳过。
    """
    saved = cost.latest_saved_run(request.config.getoption("benchmark_storage"))
    if saved is None:
        pytest.skip("no saved benchmark run: `pytest --benchmark-only --benchmark-autosave` saves one")
    path, run = saved
    rows = run["bertspec"]["ratios"]
    evidence.text("the run", f"{path}\n{run['datetime']}  {run['machine_info']['cpu'].get('brand_raw', '')}  "
                             f"statistic: best round ({run['bertspec']['statistic']})")
    evidence.table("ratios", ["question", "measurement", "ratio", "value", "side by side", "target", "meets target",
                              "missed because"],
                   [(question(r["ratio"]), r["measurement"], r["ratio"], r["value"], r["side_by_side"],
                     target_text(r["target"]), "" if r["target"] is None else r["meets_target"],
                     r.get("missed_because") or "") for r in rows])
    evidence.figure("the ratios of the saved run", ratio_figure(rows))
    missing = set(QUESTIONS.values()) - OPTIONAL_QUESTIONS - check_ratios(run)
    if missing:
        pytest.skip(f"the saved run covers part of the chapter; missing: {sorted(missing)}")


@pytest.mark.meta
def test_the_report_claim_fails_on_a_saved_run_whose_ratio_does_not_follow_from_its_timings(evidence):
    """The saved-run claim goes red when a ratio in the JSON is not what the run's own timings give.

    A two-benchmark run is made up: an eager forward whose best round is 2.0 s
    and an sdpa forward whose best round is 1.0 s, timed beside eager rounds of
    4.0 and 2.0 s. The hook's arithmetic must give sdpa ÷ eager = 1.0 / 2.0 =
    0.5; the check passes on that run and must raise AssertionError once the
    ratio in the JSON is altered, as a stale or hand-edited file would be.

    Claim ID: P4.2a
    Question: Does the report check catch a ratio that its timings do not give?
    问题：比值与计时对不上时，报告的检查能发现吗？
    中文：当 JSON 中的比值与该次运行自身的计时不符时，"已保存运行"的断言会失败。
    原因：构造一个只有两个基准的运行：eager 前向最佳轮次 2.0 秒，sdpa 前向最佳轮次 1.0 秒，与之交替计时的 eager 轮次为
    4.0 与 2.0 秒。钩子的算术必须给出 sdpa ÷ eager = 1.0 / 2.0 = 0.5；检查在该运行上通过，
    而比值被改动后（如过期或手工编辑的文件）必须抛出 AssertionError。
    """
    def benchmark_json(key, best, **info):
        return {"group": "cost at b1-t4-full", "stats": {"min": best}, "extra_info": {"key": key, **info}}

    run = {"benchmarks": [
        benchmark_json("forward eager b1-t4-full", 2.0),
        benchmark_json("forward sdpa b1-t4-full", 1.0, vs="forward eager b1-t4-full", ratio_name="sdpa ÷ eager",
                       baseline_seconds=[4.0, 2.0]),
    ]}
    (row,) = cost.add_ratios(run)
    evidence.table("the made-up run", ["measurement", "ratio", "value", "side by side"],
                   [(row["measurement"], row["ratio"], row["value"], row["side_by_side"])])
    assert row["value"] == 0.5 and row["side_by_side"]
    check_ratios(run)
    row["value"] = 0.25
    with pytest.raises(AssertionError):
        check_ratios(run)
