"""Chapter P4.2b — a manual implementation vs the optimised ones: bertspec's from-scratch
reference against transformers (the same logits, sequence output, loss and predictions), eager
against sdpa at a measured speed, and how close a forward gets to the machine's matmul throughput.

The first two claims run in the plain spec run on the model under test; the
others are benchmarks.

The benchmarks here work as P4.2a's do (spec/test_p4_2a_mask_cost.py): skipped by the
plain spec run, run by ``pytest --benchmark-only``; each asserts that what it times
computes the right thing, then records its timing as a ratio within the run, on the
bert-base-chinese-sized models of bertspec.proof.benchmarks (conftest's ``subjects``).
Measured figures are in README's Benchmarks section.
"""

from functools import partial

import pytest
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

from bertspec.models.inputs import Batch
from bertspec.proof import cost
from bertspec.proof.benchmarks import (IMPLEMENTATIONS, MASK_SHAPES, SEED, Shape, forward_key, group, logits,
                                       skip_unless_chosen, this_runs_ratios, timed)
from bertspec.proof.compare import max_diff
from bertspec.proof.examples import answer_labels, masked_batch, reference_of
from bertspec.proof.tolerances import TOL, forward_tolerance, score_peak


# ---- P4.2b the reference end to end ----

@pytest.mark.counterfeits("head_without_transform")
def test_the_reference_forward_reproduces_transformers_logits_sequence_output_and_loss(mlm, evidence):
    """The from-scratch reference, given only the state dict, reproduces transformers' logits, sequence_output and loss.

    bertspec/proof/reference.py loads the weights with ``strict=True`` and spells out
    every step; run end to end on the padded, masked batch it agrees with
    transformers everywhere, padded positions included. On eager the arithmetic
    turns out bit-equal; sdpa's fused kernel rounds differently, so each output
    is held to the rounding bound of bertspec.proof.tolerances.forward_tolerance: L
    layers x (2 (sqrt(head_dim) u32 + 2u) x the largest score + (2 sqrt(hidden)
    + sqrt(intermediate)) u32 + 3u) x max|output| (float32, u = u32 = 2^-24),
    which grows with the scores a trained checkpoint has.

    Claim ID: P4.2b
    Question: Can BERT be rebuilt from scratch from its state dict alone?
    问题：只用 state dict 能从零重建 BERT 吗？
    中文：只拿到 state dict 的从零实现，复现了 transformers 的 logits、sequence_output 与 loss。
    原因：bertspec/proof/reference.py 以 strict=True 加载权重并写出每一步；在带 padding 与 [MASK] 的 batch 上端到端运行，
    与 transformers 处处一致（含 padding 位置）。eager 下实际逐位相同；sdpa 的融合内核舍入不同，整个模型按
    舍入误差界 bertspec.proof.tolerances.forward_tolerance 比较：L 层 ×（2 (sqrt(head_dim) u32 + 2u) × 最大分数
    + (2 sqrt(hidden) + sqrt(intermediate)) u32 + 3u）× max|输出|，随训练过的 checkpoint 的分数增长。
    """
    batch = masked_batch(mlm)
    labels = answer_labels(mlm, batch)
    with torch.no_grad():
        ours = reference_of(mlm)(**batch.as_kwargs(), labels=labels)
        theirs = mlm.model(**batch.as_kwargs(), labels=labels, output_hidden_states=True)
    pairs = [("logits", ours.logits, theirs.logits), ("sequence_output", ours.hidden_states, theirs.hidden_states[-1]),
             ("loss", ours.loss, theirs.loss)]
    peak = score_peak(mlm.model, batch)
    bounds = {name: forward_tolerance(b, mlm.config, peak) for name, _, b in pairs}
    evidence.table(f"reference vs transformers {transformers.__version__} ({mlm.attn_implementation})",
                   ["output", "shape", "max |diff|", "bit-equal", "bound (atol)"],
                   [(name, tuple(a.shape), max_diff(a, b), torch.equal(a, b), bounds[name]["atol"]) for name, a, b in pairs])
    for name, a, b in pairs:
        torch.testing.assert_close(a, b, **bounds[name], msg=lambda m, name=name: f"{name}: {m}")


def test_the_reference_predicts_the_same_token_as_transformers_at_every_mask(mlm, evidence):
    """At every [MASK] the reference's highest-scoring token is transformers' highest-scoring token.

    Close logits could still disagree on the argmax when two candidates are
    nearly tied; the evidence gives each position's margin between the best and
    the second-best score, which is many orders of magnitude above the
    reference's largest logit difference.

    Claim ID: P4.2b
    Question: Does the from-scratch reference predict the same tokens as transformers?
    问题：从零实现预测的 token 与 transformers 一样吗？
    中文：在每个 [MASK] 位置，参考实现得分最高的 token 与 transformers 的相同。
    原因：logits 接近时，若两个候选几乎并列，argmax 仍可能不同；证据给出每个位置第一与第二高分之差，
    它比参考实现与 transformers 的最大 logit 差大许多个数量级。
    """
    batch = masked_batch(mlm)
    masked = batch.input_ids == mlm.tokenizer.mask_token_id
    with torch.no_grad():
        ours = reference_of(mlm)(**batch.as_kwargs()).logits[masked]
        theirs = mlm.model(**batch.as_kwargs()).logits[masked]
    top2 = theirs.topk(2).values
    evidence.table("prediction at each [MASK]", ["[MASK] #", "transformers", "reference", "margin best - second", "max |diff| of logits"],
                   [(k, mlm.token(theirs[k].argmax()), mlm.token(ours[k].argmax()),
                     top2[k, 0] - top2[k, 1], max_diff(ours[k], theirs[k])) for k in range(len(theirs))])
    assert len(theirs) == 4
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


UNPADDED_BATCH = Shape(8, 128, False)  # beside Shape(8, 128, True): the same batch with and without padding
REFERENCE_SHAPES = [Shape(8, 128, True), UNPADDED_BATCH]


def real_positions(batch: Batch) -> torch.Tensor:
    """Padded positions are left out of comparisons: their outputs exist but nothing uses them."""
    return batch.attention_mask.bool()


# ---- the machine's limit ----

MATMUL_SIZE = 2048
FLOP_SHAPE = Shape(8, 128, False)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_the_forward_reaches_a_measured_fraction_of_the_machines_matmul_throughput(
        benchmark, subjects, settings, implementation, evidence):
    """A forward's FLOPs counted from the config equal torch's own count; its FLOP/s is measured against the machine's matmul.

    The forward (bert-base size, 8 × 128 tokens) is timed round by round
    beside a 2048×2048 float32 matrix product on the same device; the hook
    divides the forward's FLOP/s by the product's (aim: at least 0.5). The
    forward's FLOPs are counted from the config (bertspec.proof.cost.forward_flops):
    torch's FlopCounterMode, run on the eager model, must find exactly as many
    (it does not count sdpa's fused CPU kernel, so eager is the witness). The
    product's matrices hold small integers, so every product and partial sum is
    exact in float32 and it must equal float64's bit for bit.

    Claim ID: P4.2b
    Question: How close does a BERT forward get to the machine's matmul throughput?
    问题：BERT 前向能达到本机矩阵乘法吞吐的多少？
    中文：按 config 计算的前向 FLOPs 与 torch 自己的计数完全相同；前向的 FLOP/s 与本机矩阵乘法的吞吐相比较。
    原因：前向（bert-base 规模，8×128 个 token）与同一设备上 2048×2048 的 float32 矩阵乘逐轮交替计时，钩子用前者的 FLOP/s
    除以后者的（目标：至少 0.5）。前向的 FLOPs 由 config 计算（bertspec.proof.cost.forward_flops），
    torch 的 FlopCounterMode 在 eager 模型上必须数出完全相同的值（它不计 sdpa 在 CPU 上的融合内核，因此以 eager 为证）。
    矩阵元素是小整数，float32 的乘积与部分和都精确，结果必须与 float64 逐位相同。
    """
    skip_unless_chosen(settings, implementation)
    generator = torch.Generator().manual_seed(SEED)
    a, b = (torch.randint(-4, 5, (MATMUL_SIZE, MATMUL_SIZE), generator=generator).float().to(settings.device)
            for _ in range(2))
    torch.testing.assert_close(a @ b, (a.double() @ b.double()).float(), **TOL["exact"])
    batch = subjects.batch(FLOP_SHAPE)
    flops = cost.forward_flops(subjects.config, FLOP_SHAPE.batch, FLOP_SHAPE.length)
    timed(benchmark, partial(logits, subjects.model(implementation), batch), settings.device, group_name="machine limit",
          key=f"FLOP/s {forward_key(implementation, FLOP_SHAPE)}", baseline=lambda: a @ b,
          vs=f"matmul {MATMUL_SIZE}x{MATMUL_SIZE} float32", ratio_name="FLOP/s ÷ matmul FLOP/s",
          flops=flops, baseline_flops=2 * MATMUL_SIZE**3, target={"at_least": 0.5}, rounds=FLOP_SHAPE.rounds)
    with FlopCounterMode(display=False) as counter:
        logits(subjects.model("eager"), batch)
    evidence.table("matrix-multiply FLOPs of one forward", ["input", "from the config", "torch's FlopCounterMode"],
                   [(str(FLOP_SHAPE), flops, counter.get_total_flops())])
    evidence.table("this run", ["ratio", "value", "target"], this_runs_ratios(benchmark))
    assert flops == counter.get_total_flops()


# ---- forwards: eager, sdpa and the from-scratch reference ----

FORWARDS = [(shape, implementation)
            for shape in [*MASK_SHAPES, UNPADDED_BATCH]
            for implementation in (*IMPLEMENTATIONS, *(["reference"] if shape in REFERENCE_SHAPES else []))]


@pytest.mark.parametrize(("shape", "implementation"), FORWARDS, ids=[f"{i}-{s}" for s, i in FORWARDS])
def test_each_implementation_gives_the_reference_logits_at_a_measured_speed(
        benchmark, subjects, settings, shape, implementation, evidence):
    """eager, sdpa and the from-scratch reference give the same logits at every measured input; their speeds are compared.

    transformers' eager and sdpa paths and bertspec.proof.reference compute the same
    maths; eager and the reference multiply in the same order (bit-identical
    here), sdpa's fused kernel sums in another, hence the float32 kernel
    tolerance. Real positions are compared; padded ones are outputs nobody
    uses. sdpa and the reference are timed round by round beside eager; the
    hook records ``sdpa ÷ eager`` and ``reference ÷ eager`` (best rounds), with
    and without padding (b8-t128), and each forward's FLOP/s.

    Claim ID: P4.2b
    Question: Is sdpa faster than eager, and do they give the same logits?
    问题：sdpa 比 eager 快吗？二者的 logits 相同吗？
    中文：eager、sdpa 与从零实现的参考模型在每个被测输入上给出相同的 logits，并比较它们的速度。
    原因：transformers 的 eager、sdpa 路径与 bertspec.proof.reference 计算相同的数学；eager 与参考实现的乘法顺序相同
    （此处逐位相同），sdpa 的融合内核求和顺序不同，因此按 float32 内核容差比较。只比较真实位置，padding 位置的输出无人使用。
    sdpa 与参考实现和 eager 逐轮交替计时；钩子记录 sdpa ÷ eager 与 reference ÷ eager（最佳轮次），含与不含 padding（b8-t128），
    以及每个前向的 FLOP/s。
    """
    skip_unless_chosen(settings, implementation)
    batch = subjects.batch(shape)
    model = subjects.model(implementation)
    eager = partial(logits, subjects.model("eager"), batch)
    baseline = {} if implementation == "eager" else {
        "baseline": eager, "vs": forward_key("eager", shape), "ratio_name": f"{implementation} ÷ eager"}
    out = timed(benchmark, partial(logits, model, batch), settings.device, group_name=group(shape),
                key=forward_key(implementation, shape), rounds=shape.rounds,
                flops=cost.forward_flops(subjects.config, shape.batch, shape.length), **baseline)
    expected = eager() if implementation == "reference" else subjects.reference_logits(shape)
    real = real_positions(batch)
    evidence.table("logits at real positions", ["implementation", "input", "real tokens", "compared with", "max |diff|"],
                   [(implementation, str(shape), int(real.sum()), "eager" if implementation == "reference" else "reference",
                     (out - expected)[real].abs().max())])
    evidence.table("this run", ["ratio", "value", "target"], this_runs_ratios(benchmark))
    torch.testing.assert_close(out[real], expected[real], **TOL["float32_kernels"])
