"""The cost chapters' benchmark harness: inputs, the models measured, timing beside a baseline, this run's ratios.

Shared by spec/test_p4_2a_mask_cost.py and spec/test_p4_2b_*.py. A
:class:`Shape` is one benchmark input (batch, length, padded or not);
:class:`Subjects` builds the bert-base-chinese-sized models under measurement
(random weights unless ``--bert-model`` is given), their random inputs and the
reference's logits, each on first use (conftest's ``subjects`` fixture holds
one for the session); :func:`timed` runs pytest-benchmark's pedantic mode,
filed under a group and a key, optionally round by round beside a baseline;
:func:`this_runs_ratios` shows what the conftest hook will write for a
benchmark (bertspec.proof.cost.add_ratios).
"""

import copy
import time
from dataclasses import dataclass

import pytest
import torch

from bertspec.builders.checkpoints import BERT_BASE_CHINESE
from bertspec.models import loading
from bertspec.models.inputs import Batch
from bertspec.proof import cost
from bertspec.proof.reference import from_model

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


def target_text(target: dict | None) -> str:
    if target is None:
        return ""
    return ", ".join(f"{sign} {target[bound]}" for bound, sign in (("at_least", "≥"), ("at_most", "≤")) if bound in target)
