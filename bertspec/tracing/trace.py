"""Record one forward pass of a BERT-family model, a decoder (GPT-2, LLaMA) or T5, step by step.

Every step is a record with the same fields (:class:`Step`): a name that is a
true module path of the model (``bert.encoder.layer.0.attention.output.LayerNorm``),
optionally with a ``:quantity`` suffix for values inside a module
(``...attention.self:probs``, ``...LayerNorm:input``), then shape, dtype,
summary values and, on request, the tensor itself.

How each value is obtained, without editing transformers:

* which modules to record is read from the model's anatomy, by its config's
  model_type: a BERT-family encoder's (bertspec.models.anatomy: BERT, RoBERTa,
  DistilBERT, ALBERT, ELECTRA or ModernBERT, as the MLM class or as the base
  model alone), or a decoder's or T5's (bertspec.models.generative: every
  self- and cross-attention module, the final norms, the lm_head);
* module outputs and LayerNorm inputs: forward hooks (a norm's input is still
  at hand when it returns);
* the mask *as each attention module received it*: a pre-hook reading its
  mask argument (a tensor, or ``None`` when transformers skipped building one);
* inside attention, a ``TorchFunctionMode`` is active only while the
  attention module runs, from the moment its input projections (q, k, v)
  have returned: every torch call it sees goes through Python, and none of
  those before can be a score. On the eager path it follows the score matrix
  from its first product (q·kᵀ, then the scale) to the first call that
  combines it with another matrix — the mask added (or a slice of it, or
  DistilBERT's ``masked_fill`` on 4.57), GPT-2 4.57's own causal
  ``torch.where``, T5's position bias — and records it there as ``scores``;
  then the softmax input (``scores+mask``: in T5 it holds the position bias
  too) and output. On the sdpa path the fused kernel hides them, so the mode
  observes the kernel's arguments (q, k, v, mask, scale, is_causal,
  enable_gqa) and the tracer *derives* scores and probabilities from them by
  the kernel's documented maths; such steps say ``source="derived"``. A
  decoder's kernel may get no mask and ``is_causal=True``: that flag is a
  step of its own (``:is_causal``), and the derived probabilities apply the
  causal triangle. So ``scores`` is q·kᵀ, scaled where the model scales,
  before any mask, on eager and sdpa alike, in every transformers version.

Steps are recorded in execution order, which for BERT is post-LN order:
``LayerNorm(x + sublayer(x))``; the values inside attention are recorded when
the self-attention module returns, so where that module applies its output
projection itself (DistilBERT, ALBERT, ModernBERT) the projection's step comes
first. ALBERT runs one shared layer num_hidden_layers times: its steps carry the
occurrence, ``…albert_layers.0.attention@2:probs``.

What a trace costs is chosen up front (:class:`Tracer`'s options), so that a
user tracing a data set pays only for what they read: shapes only, summaries
(the default) or full tensors; on sdpa, derived scores and probabilities or
not; every step or only those a filter names. Summaries are four sums per step
— on the CPU one fused pass over a float32 tensor (bertspec/tracing/_moments.c), else
torch's reductions on the tensor's device — read back to the host once per
forward (bertspec.tracing.statistics). spec/test_p4_2b_tracer_cost.py times every option against
the plain forward and against nnsight and TransformerLens.
"""

import fnmatch
import functools
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from bertspec.models import anatomy as anatomies
from bertspec.models import generative
from bertspec.tracing import hooks
from bertspec.tracing.statistics import Statistics

MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")
# Values inside self-attention, recorded as ``<module>:<quantity>``.
INTERNALS = ("scores", "scores+mask", "probs")
# The sdpa kernel's is_causal argument, recorded as a step (a 0-d True) where a module passed True: a decoder's
# mask can be None because the kernel applies the causal triangle itself.
CAUSAL_FLAG = "is_causal"


@dataclass
class Step:
    name: str
    shape: tuple | None  # None: the value was None (e.g. no mask was built)
    dtype: str
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    source: str = "observed"  # or "derived": recomputed from observed kernel inputs
    tensor: torch.Tensor | None = field(default=None, repr=False)


@functools.cache  # str() of a dtype costs more than the look-up, at every step
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class Trace:
    """The steps of one forward pass, as a cache of activations by name, by layer, and stacked over layers.

    The shape TransformerLens's ``ActivationCache`` made familiar: ``trace[name]``
    is one step by its full name (``"bert.encoder.layer.0.attention.self:probs"``);
    ``trace["probs", 0]`` is layer 0's step for a quantity (one of INTERNALS,
    ``"attention_mask"``, or ``"input"`` of a norm); ``trace.layer(0)`` holds
    every step of a layer by its path inside the layer; ``trace.stack("probs")``
    is every layer's tensor of a quantity, stacked (L, B, H, T, T). Iterating
    gives the steps in the order they ran.

    A trace that keeps its tensors computes their statistics when it is first
    read, not during the forward: the tensors are at hand, and whoever keeps
    them to work with them need not pay for summaries they never read.
    """

    def __init__(self, anatomy=None):
        self.anatomy = anatomy  # names the layers, for layer(i)
        self._steps: list[Step] = []
        self._unsummarised: list[tuple[Step, bool]] = []  # (step with a kept tensor, summed in float64)
        self._by_name: dict[str, Step] = {}
        self._indexed = 0  # how many steps _by_name has seen

    @property
    def steps(self) -> list[Step]:
        if self._unsummarised:
            statistics = Statistics()
            for step, wide in self._unsummarised:
                statistics.add(step, step.tensor, wide)
            statistics.settle()
            self._unsummarised.clear()
        return self._steps

    def _index(self) -> dict[str, Step]:
        """Steps by name, the first of a name (a tracer left open over two forwards records each name twice)."""
        for step in self._steps[self._indexed:]:  # steps are only ever appended
            self._by_name.setdefault(step.name, step)
        self._indexed = len(self._steps)
        return self._by_name

    def __getitem__(self, key: str | tuple[str, int]) -> Step:
        """A step by its name, or by (quantity, layer)."""
        self.steps  # settle pending statistics before handing a step out
        if isinstance(key, tuple):
            quantity, i = key
            return self.all(quantity)[i]
        try:
            return self._index()[key]
        except KeyError:
            raise KeyError(f"no step {key!r} in this trace") from None

    def __contains__(self, name: str) -> bool:
        return name in self._index()

    def __iter__(self):
        return iter(self.steps)

    def __len__(self):
        return len(self._steps)

    def all(self, quantity: str) -> list[Step]:
        """Every layer's step for one quantity, in layer order, e.g. ``all("probs")`` or ``all("attention_mask")``."""
        return [step for step in self.steps if step.name.endswith(":" + quantity)]

    def layer(self, i: int) -> dict[str, Step]:
        """Layer i's steps by their path inside the layer (``"attention.self:probs"``, ``"output.LayerNorm"``)."""
        if self.anatomy is None:
            raise ValueError("this trace was not made by a Tracer: it knows no layers")
        prefix = self.anatomy.layer(i) + "."
        occurrence = f"@{i}" if self.anatomy.shared_layer else ""
        found = {}
        for step in self.steps:
            path, _, quantity = step.name.partition(":")
            if path.startswith(prefix) and (not occurrence or path.endswith(occurrence)):
                inner = path[len(prefix):].removesuffix(occurrence)
                found[inner + (f":{quantity}" if quantity else "")] = step
        return found

    def stack(self, quantity: str) -> torch.Tensor:
        """Every layer's tensor of a quantity, stacked on a new first dimension (L, ...), on the CPU."""
        return torch.stack([self.tensor(step.name).cpu() for step in self.all(quantity)])

    def names(self) -> list[str]:
        return [step.name for step in self.steps]

    def tensor(self, name: str) -> torch.Tensor | None:
        step = self[name]
        if step.tensor is None and step.shape is not None:
            raise ValueError(f"step {name!r} kept no tensor: trace with keep_tensors=True")
        return step.tensor

    def table(self) -> str:
        """A fixed-width table of every step, for the terminal."""
        header = f"{'step':<58} {'shape':<18} {'dtype':<8} {'mean':>11} {'std':>11} {'min':>11} {'max':>11}  source"
        lines = [header, "-" * len(header)]
        for s in self.steps:
            stats = " ".join(f"{'-' if v is None else f'{v:.4g}':>11}" for v in (s.mean, s.std, s.min, s.max))
            lines.append(f"{s.name:<58} {str(s.shape):<18} {s.dtype:<8} {stats}  {s.source}")
        return "\n".join(lines)


class _AttentionOps(TorchFunctionMode):
    """Observes the torch calls one attention module makes, from the moment its input projections have returned.

    The score matrix is followed from its birth, the module's 4-D matrix
    product q·kᵀ, through what scalars make of it (the scale, a dtype cast):
    ``scores`` is its value when it first meets another matrix. That meeting is
    the mask added, wherever the mask comes from (the tensor the module
    received, a slice of it as 4.57's GPT-2 and LLaMA take, DistilBERT's
    ``masked_fill`` on 4.57), GPT-2 4.57's own causal ``torch.where``, or T5's
    position bias (added before the mask on 5.x, with the mask folded into it
    on 4.57). So ``scores`` is q·kᵀ, scaled where the family scales, before
    any mask and, in T5, before the position bias; the softmax's input is
    everything added to it.
    """

    def __init__(self):
        super().__init__()
        self.scores = None  # the score matrix as it first met another matrix
        self._latest = None  # the score matrix's latest value while it has met only scalars
        self.softmax = None  # (input, output)
        self.sdpa = None  # (args, kwargs) of scaled_dot_product_attention

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        follows = self.scores is None and self._latest is not None and any(a is self._latest for a in args)
        if follows and _meets_a_matrix(args, kwargs):
            # T5 4.57 adds its (masked) position bias in place: the value before is kept, not the sum.
            self.scores, follows = (self._latest.clone() if _in_place(name) else self._latest), False
        out = func(*args, **kwargs)
        if func is F.softmax:
            self.softmax = (args[0], out)
        elif func is F.scaled_dot_product_attention:
            self.sdpa = (args, kwargs)
        elif (self.scores is None and name in PRODUCTS and out.dim() == 4) or (
                follows and isinstance(out, torch.Tensor) and out.shape == self._latest.shape):
            self._latest = out  # q·kᵀ, or what a scalar or a cast made of it
        return out


# q·kᵀ is the last of these with a (batch, heads, queries, keys) result before the scores meet a matrix; rotary
# embeddings computed inside the attention (ModernBERT on 4.57) multiply frequencies by positions first, in 3-D.
PRODUCTS = ("matmul", "__matmul__", "bmm", "einsum")


def _meets_a_matrix(args, kwargs) -> bool:
    """A call that combines the score matrix with a tensor of more than one value (a mask, a bias)."""
    return sum(isinstance(a, torch.Tensor) and a.numel() > 1 for a in (*args, *kwargs.values())) > 1


def _in_place(name: str) -> bool:
    return name.startswith("__i") or (name.endswith("_") and not name.startswith("_"))


def _sdpa_arguments(args, kwargs):
    """q, k and the mask of a scaled_dot_product_attention call; ALBERT on 4.57 passes them all by keyword."""
    q, k = kwargs.get("query", args[0] if args else None), kwargs.get("key", args[1] if len(args) > 1 else None)
    return q, k, kwargs.get("attn_mask", args[3] if len(args) > 3 else None)


def _sdpa_causal(args, kwargs) -> bool:
    """The kernel's is_causal flag: with no mask, decoders on sdpa hand causality to the kernel this way."""
    return bool(kwargs.get("is_causal", args[5] if len(args) > 5 else False))


def _sdpa_internals(args, kwargs):
    """Scores, masked scores and probabilities as F.scaled_dot_product_attention's documentation defines them.

    With ``enable_gqa`` each key head serves a group of query heads (repeated
    to their count); with ``is_causal`` a query sees the keys up to its own
    position (a lower triangle aligned top-left), the rest get -inf.
    """
    q, k, mask = _sdpa_arguments(args, kwargs)
    if kwargs.get("enable_gqa"):
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    scale = kwargs.get("scale") or 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.transpose(-2, -1)).mul_(scale)  # in place: the same values as `* scale`, one matrix fewer
    if _sdpa_causal(args, kwargs):
        future = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril().logical_not()
        masked = scores.masked_fill(future, float("-inf"))
    elif mask is None:
        masked = scores
    elif mask.dtype == torch.bool:  # True = may attend; torch's reference fills the rest with -inf
        masked = scores.masked_fill(~mask, float("-inf"))
    else:
        masked = scores + mask
    return scores, masked, torch.softmax(masked, dim=-1)


def module_path(step_name: str) -> str:
    """The module path a step name records: without its ``:quantity`` and ALBERT's ``@occurrence``."""
    return step_name.partition(":")[0].partition("@")[0]


def quantity(step_name: str) -> str:
    """What a step records inside its module (``probs``, ``input``); for a module's output or a model input, its name."""
    return step_name.rpartition(":")[2]


class _Shape(NamedTuple):
    """What a shapes-only trace records of a derived value that it never computes."""

    shape: tuple
    dtype: torch.dtype


def _sdpa_shapes(args, kwargs):
    """Shapes and dtypes of what _sdpa_internals would compute, from the kernel's arguments alone."""
    q, k, mask = _sdpa_arguments(args, kwargs)
    heads = ((*torch.broadcast_shapes(q.shape[:-3], k.shape[:-3]), q.shape[-3]) if kwargs.get("enable_gqa")
             else torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]))
    scores = _Shape((*heads, q.shape[-2], k.shape[-2]), q.dtype)
    if mask is None:
        return scores, scores, scores
    dtype = scores.dtype if mask.dtype == torch.bool else torch.promote_types(scores.dtype, mask.dtype)
    masked = _Shape(tuple(torch.broadcast_shapes(scores.shape, mask.shape)), dtype)
    return scores, masked, masked


class StepFilter:
    """Which steps a trace records: all of them, or those named by a pattern or a quantity.

    ``only`` holds fnmatch patterns over step names (``"bert.encoder.layer.11.*"``,
    ``"*.LayerNorm"``) or bare quantities (``"probs"``, ``"attention_mask"``), which
    name every layer's step of that quantity (and the model input of that name).
    A step left out costs a name look-up: no statistics, no tensor, and inside
    attention no function mode when none of the module's values is wanted.
    """

    def __init__(self, only=None):
        self.patterns = None if only is None else ((only,) if isinstance(only, str) else tuple(only))

    def __call__(self, name: str) -> bool:
        return self.patterns is None or _names(self.patterns, name)


@functools.lru_cache(maxsize=2**16)  # the same names and patterns recur at every forward, and a tracer per batch
def _names(patterns: tuple, name: str) -> bool:
    recorded = quantity(name)
    return any(p == recorded or fnmatch.fnmatchcase(name, p) for p in patterns)


class _Watch:
    """One self-attention module's function mode, turned on once the module's input projections have run."""

    def __init__(self, ops: _AttentionOps, projections: int):
        self.ops, self.left = ops, projections
        if not projections:
            ops.__enter__()

    @property
    def on(self) -> bool:
        return self.left == 0

    def projection_ran(self) -> None:
        if self.left:  # a module with no projections counted had its mode on from the start
            self.left -= 1
            if self.left == 0:
                self.ops.__enter__()


def anatomy_of(model: torch.nn.Module):
    """The roles of a model's modules: a BERT-family encoder's (bertspec.models.anatomy) or a decoder's or T5's
    (bertspec.models.generative), by its config's model_type."""
    found = generative.of_model_type(getattr(getattr(model, "config", None), "model_type", None))
    return found or anatomies.of_model(model)


class Tracer:
    """Context manager: while open, every forward pass of ``model`` is recorded.

    >>> with Tracer(model, keep_tensors=True) as tracer:
    ...     model(**inputs)
    >>> tracer.trace["bert.encoder.layer.0.attention.self:probs"].shape

    Options, so that a trace costs only what its reader needs:

    * ``keep_tensors``: keep every step's tensor (the tracer holds them; nothing
      is copied); their summaries are then computed when the trace is first read;
    * ``summaries``: mean, std, min and max of every step (default); ``False``
      records names, shapes and dtypes only;
    * ``derive``: on the sdpa path, derive scores, scores + mask and
      probabilities from the kernel's inputs (default: on, as the claims read
      them); it recomputes the part of attention the fused kernel skips, and its
      cost is measured on its own. With summaries off, derived steps get their
      shapes without any arithmetic;
    * ``only``: record only the steps a :class:`StepFilter` names.
    """

    def __init__(self, model: torch.nn.Module, keep_tensors: bool = False, *, summaries: bool = True,
                 derive: bool = True, only=None):
        self.model = model
        self.keep_tensors = keep_tensors
        self.anatomy = anatomy_of(model)
        self.route = self.anatomy.route_in(model)
        self.summaries = summaries
        self.derive = derive
        self.wanted = StepFilter(only)
        self.trace = Trace(self.anatomy)
        self._statistics = Statistics()
        self._handles = []
        self._shared = self.anatomy.shared_prefix(model)
        self._calls: dict[str, int] = {}
        self._projections: dict[str, int] = {}  # self-attention path -> how many input projections it has
        self._watch: _Watch | None = None  # the running self-attention's function mode

    def record(self, name, value, source="observed", wide=False):
        """Append the step ``name``; ``wide``: its values can reach finfo.min, so it is summed in float64."""
        if not self.wanted(name):
            return
        # Query, key and value are recorded inside self-attention: there the function mode
        # would route every call below (each shape read, each sum) through Python.
        with torch._C.DisableTorchFunction():
            self.trace._steps.append(self._step(name, value, source, wide))

    def _step(self, name, value, source, wide) -> Step:
        if value is None:
            return Step(name, None, "None", source=source)
        step = Step(name, tuple(value.shape), _dtype_name(value.dtype), source=source,
                    tensor=value.detach() if self.keep_tensors else None)
        if self.summaries and self.keep_tensors:
            self.trace._unsummarised.append((step, wide))
        elif self.summaries:
            self._statistics.add(step, value, wide)
        return step

    def __enter__(self):
        self._hook(self.model, pre=self._record_inputs, post=self._settle)
        by_kind = {"output": lambda n: (None, self._record_output(n)),
                   "projection": lambda n: (None, self._record_projection(n)),
                   "norm": lambda n: (None, self._record_norm(n)),
                   "attention": lambda n: (self._attention_pre(n), self._attention_post(n))}
        for path, kind, module in self.anatomy.traced(self.model):
            pre, post = by_kind[kind](path)
            if kind == "projection":
                attention = path.rpartition(".")[0]
                self._projections[attention] = self._projections.get(attention, 0) + 1
            if self._shared is not None and path.startswith(self._shared):
                self._hook(module, pre=self._count_call(path))
            self._hook(module, pre=pre, post=post)
        return self

    def _count_call(self, path):
        def hook(module, args, kwargs):
            self._calls[path] = self._calls.get(path, -1) + 1
        return hook

    def _name(self, path: str) -> str:
        """The step name of a module: its path, and for a shared layer's modules the occurrence, path@k."""
        return f"{path}@{self._calls[path]}" if path in self._calls else path

    def __exit__(self, *exc):
        hooks.remove(self._handles)
        watch, self._watch = self._watch, None
        if watch is not None and watch.on:  # a forward that raised inside attention left its mode on
            watch.ops.__exit__(None, None, None)
        self._statistics.settle()  # a forward that raised never reached the model's post-hook

    def _hook(self, module, pre=None, post=None):
        self._handles += hooks.register(module, pre=pre, post=post)

    def _record_inputs(self, module, args, kwargs):
        self._calls.clear()  # a new forward pass: occurrences count from 0 again
        for key in MODEL_INPUTS:
            if kwargs.get(key) is not None:  # a custom float mask given as input can hold finfo.min too
                self.record(key, kwargs[key], wide=key.endswith("attention_mask"))

    def _settle(self, module, args, kwargs, output):
        self._statistics.settle()

    def _record_norm(self, path):
        # A norm is a leaf: its input, still at hand when it returns, is recorded then, one hook instead of two.
        def hook(module, args, kwargs, output):
            name = self._name(path)
            self.record(f"{name}:input", args[0] if args else kwargs["input"])
            self.record(name, output)
        return hook

    def _record_output(self, path):
        def hook(module, args, kwargs, output):
            self.record(self._name(path), output[0] if isinstance(output, tuple) else output)
        return hook

    def _record_projection(self, path):
        record = self._record_output(path)

        def hook(module, args, kwargs, output):
            record(module, args, kwargs, output)
            if self._watch is not None:
                self._watch.projection_ran()
        return hook

    def _attention_pre(self, path):
        # The function mode routes every torch call through Python while it is on: it is entered once the
        # input projections have run (q, k and v before any score: 8 of some 20 calls a layer not seen).
        def hook(module, args, kwargs):
            mask = self.route.mask(module, args, kwargs)
            name = self._name(path)
            self.record(f"{name}:attention_mask", mask, wide=True)
            if any(self.wanted(f"{name}:{quantity}") for quantity in (*INTERNALS, CAUSAL_FLAG)):
                ops = _AttentionOps()
                self._watch = _Watch(ops, self._projections.get(path, 0))
        return hook

    def _attention_post(self, path):
        def hook(module, args, kwargs, output):
            watch, self._watch = self._watch, None
            name = self._name(path)
            if watch is not None:
                if not watch.on:
                    raise RuntimeError(f"{name}: {watch.left} of its input projections never ran; bertspec.models.anatomy "
                                       "names a module this attention does not call")
                watch.ops.__exit__(None, None, None)
                with torch.no_grad():
                    self._record_attention_internals(name, watch.ops)
            self.record(name, output[0] if isinstance(output, tuple) else output)
        return hook

    def _record_attention_internals(self, name, ops):
        if ops.sdpa is not None and _sdpa_causal(*ops.sdpa):
            self.record(f"{name}:{CAUSAL_FLAG}", torch.tensor(True))
        if ops.sdpa is not None:
            if not self.derive:
                return
            # Without summaries or tensors only shapes are read: they follow from the arguments' shapes.
            derive = _sdpa_internals if self.summaries or self.keep_tensors else _sdpa_shapes
            scores, masked, probs = derive(*ops.sdpa)
            source = "derived"
        elif ops.softmax is not None:
            masked, probs = ops.softmax
            scores = masked if ops.scores is None else ops.scores  # nothing met the scores: no mask was added
            source = "observed"
        else:
            raise RuntimeError(f"{name}: attention ran neither softmax nor scaled_dot_product_attention; unknown implementation")
        self.record(f"{name}:scores", scores, source)
        self.record(f"{name}:scores+mask", masked, source, wide=masked is not scores)
        self.record(f"{name}:probs", probs, source)


def trace_forward(model, keep_tensors: bool = False, *, summaries: bool = True, derive: bool = True, only=None,
                  **inputs):
    """Run ``model(**inputs)`` under a Tracer with those options; return (trace, model output)."""
    with Tracer(model, keep_tensors, summaries=summaries, derive=derive, only=only) as tracer, torch.no_grad():
        output = model(**inputs)
    return tracer.trace, output
