"""Chapter P4.2 — what masking and attention cost, measured as ratios within one run.

Every test here but the last is a benchmark: the plain spec run skips them
(``--benchmark-skip`` in pyproject.toml), ``pytest --benchmark-only`` runs them.
Each one asserts that what it times computes the right thing, then records its
timing under a key (``extra_info["key"]``) and, where it is a fraction of
another timing, what that is (``extra_info["vs"]``). Where the two sides could
drift apart in time, the test alternates them round by round and keeps the
baseline's rounds (``extra_info["baseline_seconds"]``); otherwise ``vs`` is the
key of another benchmark. The conftest hook ``pytest_benchmark_update_json``
divides the best rounds (bertspec.proof.cost.add_ratios) and writes the ratios into
the saved JSON; the last test shows the newest saved run as a table and a figure.

The models are bert-base-chinese-sized (random weights unless ``--bert-model``
is given); every input is random token ids, so nothing here depends on what a
model has learned. Benchmark groups are named by input ("cost at
b8-t512-padded"), so pytest-benchmark's table puts a forward, its mask and its
traced or trimmed variants side by side.
"""

import copy
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from functools import partial

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bertspec.models import anatomy, loading
from bertspec.proof import cost
from bertspec.tracing import masks
from bertspec.tracing import trace as trace_module
from bertspec.builders.checkpoints import BERT_BASE_CHINESE
from bertspec.handbook.figures import ratio_figure
from bertspec.models.inputs import Batch
from bertspec.proof.reference import additive_mask, from_model
from bertspec.proof.tolerances import TOL
from bertspec.tracing.trace import INTERNALS, mask_argument, quantity, trace_forward

SEED = 0
IMPLEMENTATIONS = ("eager", "sdpa")


@dataclass(frozen=True)
class Shape:
    """One benchmark input: batch size, padded length, and whether rows are shorter than it."""

    batch: int
    length: int
    padded: bool

    def __str__(self):
        return f"b{self.batch}-t{self.length}-{'padded' if self.padded else 'full'}"

    def lengths(self) -> list[int]:
        """Real lengths of the rows: padded rows grow evenly up to the full length (T/B, 2T/B, ..., T)."""
        if not self.padded:
            return [self.length] * self.batch
        return [self.length * (i + 1) // self.batch for i in range(self.batch)]

    @property
    def rounds(self) -> dict:
        """Few rounds where one forward takes seconds on a 2-core CPU; the best round is what counts."""
        small = self.batch * self.length <= 1024
        return {"rounds": 5, "warmup_rounds": 1} if small else {"rounds": 2, "warmup_rounds": 0}


MASK_SHAPES = [Shape(1, t, False) for t in (32, 128, 512)] + [Shape(8, t, True) for t in (32, 128, 512)]
UNPADDED_BATCH = Shape(8, 128, False)  # beside Shape(8, 128, True): the same batch with and without padding
REFERENCE_SHAPES = [Shape(8, 128, True), UNPADDED_BATCH]
PADDED_TO_512 = Shape(8, 512, True)


def group(shape: Shape) -> str:
    return f"cost at {shape}"


def forward_key(implementation: str, shape: Shape) -> str:
    return f"forward {implementation} {shape}"


class Subjects:
    """The bert-base-sized models under measurement, their inputs and the reference's logits, each made on first use."""

    def __init__(self, settings):
        self.settings = settings
        self._models = {}
        self._reference_logits = {}

    def model(self, implementation: str) -> torch.nn.Module:
        if implementation not in self._models:
            self._models[implementation] = self._build(implementation)
        return self._models[implementation]

    def _build(self, implementation):
        if implementation == "reference":
            return from_model(self.model("eager"))
        if self.settings.model_path is not None:
            return loading.load(self.settings.model_path, implementation, self.settings.device).model
        from transformers import BertConfig, BertForMaskedLM

        torch.manual_seed(SEED)  # the same weights for every implementation
        config = BertConfig(**BERT_BASE_CHINESE, attn_implementation=implementation)
        return BertForMaskedLM(config).to(self.settings.device).eval()

    @property
    def config(self):
        return self.model("eager").config

    def batch(self, shape: Shape) -> Batch:
        """Random token ids (never [PAD]), right-padded to the shape's length."""
        if shape.length > self.config.max_position_embeddings:
            pytest.skip(f"{shape.length} positions exceed the model's {self.config.max_position_embeddings}")
        generator = torch.Generator().manual_seed(SEED)
        pad = self.config.pad_token_id or 0
        ids = torch.randint(0, self.config.vocab_size - 1, (shape.batch, shape.length), generator=generator)
        ids += ids >= pad  # every id but [PAD]'s
        real = torch.arange(shape.length) < torch.tensor(shape.lengths())[:, None]
        ids = ids.masked_fill(~real, pad)
        return Batch(ids, real.long(), torch.zeros_like(ids)).to(self.settings.device)

    def reference_logits(self, shape: Shape) -> torch.Tensor:
        """What the from-scratch reference computes on this input: the expected logits."""
        if shape not in self._reference_logits:
            self._reference_logits[shape] = logits(self.model("reference"), self.batch(shape))
        return self._reference_logits[shape]


@pytest.fixture(scope="module")
def subjects(settings) -> Subjects:
    """bert-base-chinese-sized models (or ``--bert-model``), built once for the whole chapter.

    Building a random model here, instead of using the ``bert`` fixture, is
    deliberate: the claims are about the cost of a forward pass of that size,
    which does not depend on how the weights were made, and the bundled model
    is too small to show it. The weights come from torch.manual_seed(0), the
    same for every attention implementation. Only benchmarks use this fixture,
    so the plain spec run (benchmarks skipped) never builds it.
    """
    return Subjects(settings)


def logits(model, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch.as_kwargs()).logits


def skip_unless_chosen(settings, implementation):
    if implementation in IMPLEMENTATIONS and implementation not in settings.attn_implementations:
        pytest.skip(f"{implementation} not chosen by --attn-implementation")


def timed(benchmark, fn, device, *, group_name, key, rounds, baseline=None, **info):
    """benchmark.pedantic on fn (made to wait for the device), filed under a group and a key.

    With a baseline, rounds alternate: before each round of fn the baseline runs
    once, timed here (pedantic's setup is outside its timing), into
    ``extra_info["baseline_seconds"]``. On a shared machine the load changes
    from minute to minute; a ratio is only as good as the closeness in time of
    its two sides. pedantic runs the setup before its warm-up rounds too; those
    baseline rounds are dropped, so that both sides' best round is taken over
    as many rounds (one more round for the baseline would favour it).
    """
    benchmark.group = group_name
    benchmark.extra_info.update(key=key, **info)
    setup = None
    if baseline is not None:
        seconds = benchmark.extra_info["baseline_seconds"] = []
        run_baseline = cost.synchronised(baseline, device)

        def setup():
            start = time.perf_counter()
            run_baseline()
            seconds.append(time.perf_counter() - start)

    cost.wait_for(device)  # work queued before must not land in the first round
    result = benchmark.pedantic(cost.synchronised(fn, device), setup=setup, **rounds)
    if baseline is not None:
        del seconds[:rounds.get("warmup_rounds", 0)]
    return result


def this_runs_ratios(benchmark) -> list[tuple]:
    """The ratios the hook will write for this benchmark (when both sides were measured here), for the evidence."""
    entry = {"group": benchmark.group, "stats": {cost.STATISTIC: getattr(benchmark.stats.stats, cost.STATISTIC)},
             "extra_info": copy.deepcopy(benchmark.extra_info)}
    return [(row["ratio"], row["value"], target_text(row["target"])) for row in cost.add_ratios({"benchmarks": [entry]})]


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


# ---- the mask: transformers' builders and the plan's formula ----

class _Reached(Exception):
    """Raised by a pre-hook to stop a forward at the first self-attention module."""


def first_attention_inputs(model, batch: Batch):
    """(hidden states, mask) that the first self-attention module receives; the encoder itself never runs."""
    (_, first), *_ = anatomy.of_model(model).self_attention_modules(model)

    def stop(module, args, kwargs):
        raise _Reached(args[0] if args else kwargs["hidden_states"], mask_argument(module, args, kwargs))

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


HOOKS_COST = ("a Python hook call and a record per step (143 hooks on BERT; a norm's input and output from one), a "
              "torch function mode that sees the calls inside attention after q, k and v (12 of some 20 a layer), and "
              "opening the tracer (the hooks registered, then removed: 1.1 ms): 4.3 ms per forward on a 12-layer model "
              "of width 8 (sdpa 3.7), 6-8 ms beside a bert-base forward (2.4-2.8 % at batch 1, median of 30 paired "
              "rounds), where the rounds' spread on a shared machine is of the same size")
SUMMED_BY = ("one read pass per step, shared among torch's threads (bertspec.tracing._moments)" if trace_module.ON_TORCHS_THREADS
             else "one read pass per step, on one thread (bertspec.tracing._moments)" if trace_module.fused_moments is not None
             else "torch's three read passes per step (bertspec.tracing._moments is not built here)")
VALUES_READ = ("about 32 M values per sequence of 128 at bert-base size (every sublayer's output, the LayerNorm inputs, "
               "the attention matrices, the logits: 128 MB of float32)")
PASSES_COST = (
    f"{SUMMED_BY} over {VALUES_READ}, 3.3 ms at batch 1 and 26.5 ms at batch 8 inside the forward (eager; torch's "
    "three passes: 21-24 and 121-124 ms), and a Python call per step; on top of the shapes-only cost, and within "
    "the spread of the plain forward's own rounds (4-10 % at batch 1)"
    if trace_module.ON_TORCHS_THREADS else
    f"{SUMMED_BY} over {VALUES_READ}: 4.5-10 ms at batch 1 and 52-78 ms at batch 8 inside the forward on one "
    "thread, half of each tensor read from the other core's cache; on top of the shapes-only cost"
    if trace_module.fused_moments is not None else
    f"{SUMMED_BY} over {VALUES_READ}, 21-24 ms at batch 1 inside the forward: the compiled one-pass summary "
    "needs a C compiler at install and a CPU with AVX2")
HOLDING_COST = ("fresh memory for every kept tensor: the allocator cannot reuse what the trace holds, so the kernel maps "
                "and zeroes new pages (some 28 000 page faults for 110 MiB); on top of the shapes-only cost, since a "
                "full trace computes its summaries when first read")
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

PEERS_MISSING = "the tracer's peers are an optional extra: pip install -e .[peers] (nnsight, transformer-lens)"


class NnsightSaveAll:
    """nnsight's trace, saving every module output and LayerNorm input that bertspec records, in execution order.

    NNsight(model) replaces every module's forward with its own controller, so
    it gets a copy: the plain forward it is timed against stays transformers'
    own. nnsight serves values in execution order only, which the names of a
    bertspec trace give. Inside attention nnsight sees no scores or
    probabilities (its ``.source`` could reach them, at a cost of its own).
    """

    def __init__(self, model, batch: Batch, folder, tokenizer):
        nnsight = pytest.importorskip("nnsight", reason=PEERS_MISSING)
        step_names = trace_forward(model, summaries=False, derive=False, **batch.as_kwargs())[0].names()
        with warnings.catch_warnings():  # "a submodule named 'output' is served as E_output": BERT has many
            warnings.simplefilter("ignore", UserWarning)
            self.model = nnsight.NNsight(copy.deepcopy(model))
        envoys = {path.removeprefix("model."): envoy for path, envoy in self.model.named_modules()}
        self.points = [(envoys[name.removesuffix(":input")], name.endswith(":input")) for name in step_names
                       if name.removesuffix(":input") in envoys]
        self.save = nnsight.save

    def __call__(self, batch: Batch):
        points = self.points
        with torch.no_grad():
            with self.model.trace(**batch.as_kwargs()):
                saved = self.save([envoy.input if is_input else envoy.output for envoy, is_input in points])
                output = self.model.output.save()
        return saved, output.logits

    def held(self, saved) -> list[torch.Tensor]:
        return [t for value in saved for t in (value if isinstance(value, tuple) else (value,)) if torch.is_tensor(t)]


class TransformerLensCache:
    """TransformerLens 4's TransformerBridge over the same transformers model, and its ``run_with_cache``.

    TransformerLens 4 has no HookedEncoder; its bridge wraps the model's own
    modules (so it gets a copy) and forces eager attention, so that its hooks
    see the pattern: it is timed on eager only. ``boot_transformers`` reads the
    checkpoint folder's config; the weights are those of the model handed over.
    """

    def __init__(self, model, batch: Batch, folder, tokenizer):
        pytest.importorskip("transformer_lens", reason=PEERS_MISSING)
        from transformer_lens.model_bridge import TransformerBridge

        self.bridge = TransformerBridge.boot_transformers(str(folder), hf_model=copy.deepcopy(model), tokenizer=tokenizer)

    def __call__(self, batch: Batch):
        with torch.no_grad():
            out, cache = self.bridge.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask,
                                                    token_type_ids=batch.token_type_ids)
        return cache, out

    def held(self, cache) -> list[torch.Tensor]:
        return list(cache.values())


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


# ---- the report ----

QUESTIONS = {  # a ratio name (its start) -> the question it answers
    "mask ÷": "mask cost", "formula ÷": "mask cost (the plan's formula)",
    "sdpa ÷ eager": "eager vs sdpa", "reference ÷ eager": "reference vs transformers",
    "each at its length ÷": "padding waste", "traced (": "tracer overhead", "peak memory": "tracer memory",
    "nnsight": "the tracer's peers", "TransformerLens": "the tracer's peers", "FLOP/s ÷": "the machine's limit",
}
OPTIONAL_QUESTIONS = {"the tracer's peers"}  # answered only where the peers extra is installed


def target_text(target: dict | None) -> str:
    if target is None:
        return ""
    return ", ".join(f"{sign} {target[bound]}" for bound, sign in (("at_least", "≥"), ("at_most", "≤")) if bound in target)


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
