"""Record one forward pass of a BERT-family model, step by step.

Every step is a record with the same fields (:class:`Step`): a name that is a
true module path of the model (``bert.encoder.layer.0.attention.output.LayerNorm``),
optionally with a ``:quantity`` suffix for values inside a module
(``...attention.self:probs``, ``...LayerNorm:input``), then shape, dtype,
summary values and, on request, the tensor itself.

How each value is obtained, without editing transformers:

* which modules to record is read from the family's anatomy (bertspec.anatomy):
  BERT, RoBERTa, DistilBERT, ALBERT, ELECTRA or ModernBERT, as the MLM class
  or as the base model alone;
* module outputs and LayerNorm inputs: forward hooks and pre-hooks;
* the mask *as the self-attention module received it*: a pre-hook reading its
  mask argument (a tensor, or ``None`` when transformers skipped building one);
* inside attention, a ``TorchFunctionMode`` is active only while the
  self-attention module runs. On the eager path it observes the score matrix
  entering ``scores + mask`` (or DistilBERT's ``masked_fill`` on 4.57), the
  softmax input and output. On the sdpa path the fused kernel hides them, so
  the mode observes the kernel's arguments (q, k, v, mask, scale) and the
  tracer *derives* scores and probabilities from them by the kernel's
  documented maths; such steps say ``source="derived"``.

Steps are recorded in execution order, which for BERT is post-LN order:
``LayerNorm(x + sublayer(x))``; the values inside attention are recorded when
the self-attention module returns, so where that module applies its output
projection itself (DistilBERT, ALBERT, ModernBERT) the projection's step comes
first. ALBERT runs one shared layer num_hidden_layers times: its steps carry the
occurrence, ``…albert_layers.0.attention@2:probs``.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from bertspec import anatomy as anatomies

MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


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


def summarize(name: str, value, keep_tensor: bool, source: str = "observed") -> Step:
    if value is None:
        return Step(name, None, "None", source=source)
    t = value.detach()
    # float64: a mask full of finfo(float32).min overflows a float32 mean. The copy is private
    # (copy=True), so it is centred in place; min and max are exact in the tensor's own dtype.
    # The mean, then one BLAS dot of the centred copy, instead of torch.std's Welford pass:
    # the summaries cost half as much (the tracer's overhead is measured in spec/test_p4_cost.py).
    x = t.reshape(-1).to(torch.float64, copy=True)
    low, high = torch.aminmax(t if t.is_floating_point() else x)
    n = x.numel()
    mean = x.mean().item()
    std = math.sqrt(torch.dot(x.sub_(mean), x).item() / (n - 1)) if n > 1 else 0.0
    return Step(name, tuple(t.shape), str(t.dtype).removeprefix("torch."), mean, std, low.item(), high.item(),
                source, t if keep_tensor else None)


class Trace:
    """The ordered steps of one forward pass, looked up by name."""

    def __init__(self):
        self.steps: list[Step] = []

    def __getitem__(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"no step {name!r} in this trace")

    def __contains__(self, name: str) -> bool:
        return any(step.name == name for step in self.steps)

    def __iter__(self):
        return iter(self.steps)

    def __len__(self):
        return len(self.steps)

    def all(self, quantity: str) -> list[Step]:
        """Every layer's step for one quantity, e.g. ``all("probs")`` or ``all("attention_mask")``."""
        return [step for step in self.steps if step.name.endswith(":" + quantity)]

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
    """Observes the torch calls one self-attention module makes."""

    def __init__(self, mask):
        super().__init__()
        self.mask = mask
        self.scores = None  # the scores before the mask: left operand of `scores + mask`, or of masked_fill
        self.softmax = None  # (input, output)
        self.sdpa = None  # (args, kwargs) of scaled_dot_product_attention

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if func is F.softmax:
            self.softmax = (args[0], out)
        elif func is F.scaled_dot_product_attention:
            self.sdpa = (args, kwargs)
        elif name in ("add", "__add__") and self.mask is not None and len(args) == 2 and args[1] is self.mask:
            self.scores = args[0]
        elif name == "masked_fill" and self.mask is not None and self.scores is None:
            self.scores = args[0]  # DistilBERT on 4.57 hides padded keys with masked_fill, not an addition
        return out


def is_local(module) -> bool:
    """Whether a self-attention module attends within a window (ModernBERT's local layers): 4.57 keeps
    ``local_attention = (w/2, w/2)`` ((-1, -1) when global), 5.x ``sliding_window`` (None when global)."""
    return getattr(module, "local_attention", (-1, -1)) != (-1, -1) or getattr(module, "sliding_window", None) is not None


def mask_key(module, args, kwargs) -> str | int | None:
    """Where a self-attention module's effective mask is: a keyword's name, a position, or None (no mask passed).

    BERT, RoBERTa, ELECTRA and 5.x's DistilBERT and ModernBERT take ``attention_mask=``;
    ALBERT passes it second, positionally; DistilBERT on 4.57 calls it ``mask=``;
    ModernBERT on 4.57 passes every layer a ``sliding_window_mask`` too, which its
    local layers use instead.
    """
    for name in (("sliding_window_mask",) if is_local(module) else ()) + ("attention_mask", "mask"):
        if name in kwargs:
            return name
    return 1 if len(args) > 1 else None


def mask_argument(module, args, kwargs):
    """The mask a self-attention module was called with, as its attention uses it."""
    key = mask_key(module, args, kwargs)
    return None if key is None else kwargs[key] if isinstance(key, str) else args[key]


def _sdpa_internals(args, kwargs):
    """Scores, masked scores and probabilities as F.scaled_dot_product_attention defines them."""
    q, k = kwargs.get("query", args[0] if args else None), kwargs.get("key", args[1] if len(args) > 1 else None)
    mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
    scale = kwargs.get("scale") or 1.0 / math.sqrt(q.shape[-1])
    scores = q @ k.transpose(-2, -1) * scale
    if mask is None:
        masked = scores
    elif mask.dtype == torch.bool:  # True = may attend; torch's reference fills the rest with -inf
        masked = scores.masked_fill(~mask, float("-inf"))
    else:
        masked = scores + mask
    return scores, masked, torch.softmax(masked, dim=-1)


class Tracer:
    """Context manager: while open, every forward pass of ``model`` is recorded.

    >>> with Tracer(model, keep_tensors=True) as tracer:
    ...     model(**inputs)
    >>> tracer.trace["bert.encoder.layer.0.attention.self:probs"].shape
    """

    def __init__(self, model: torch.nn.Module, keep_tensors: bool = False):
        self.model = model
        self.keep_tensors = keep_tensors
        self.anatomy = anatomies.of_model(model)
        self.trace = Trace()
        self._handles = []
        self._shared = self.anatomy.shared_prefix(model)
        self._calls: dict[str, int] = {}

    def record(self, name, value, source="observed"):
        self.trace.steps.append(summarize(name, value, self.keep_tensors, source))

    def __enter__(self):
        self._hook(self.model, pre=self._record_inputs)
        hooks = {"output": lambda n: (None, self._record_output(n)),
                 "norm": lambda n: (self._record_input(n), self._record_output(n)),
                 "attention": lambda n: (self._attention_pre(n), self._attention_post(n))}
        for path, kind in self.anatomy.traced(self.model):
            pre, post = hooks[kind](path)
            module = self.model.get_submodule(path)
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
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, module, pre=None, post=None):
        if pre is not None:
            self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        if post is not None:
            self._handles.append(module.register_forward_hook(post, with_kwargs=True))

    def _record_inputs(self, module, args, kwargs):
        self._calls.clear()  # a new forward pass: occurrences count from 0 again
        for key in MODEL_INPUTS:
            if kwargs.get(key) is not None:
                self.record(key, kwargs[key])

    def _record_input(self, path):
        def hook(module, args, kwargs):
            self.record(f"{self._name(path)}:input", args[0] if args else kwargs["input"])
        return hook

    def _record_output(self, path):
        def hook(module, args, kwargs, output):
            self.record(self._name(path), output[0] if isinstance(output, tuple) else output)
        return hook

    def _attention_pre(self, path):
        def hook(module, args, kwargs):
            mask = mask_argument(module, args, kwargs)
            self.record(f"{self._name(path)}:attention_mask", mask)
            module._bertspec_ops = _AttentionOps(mask).__enter__()
        return hook

    def _attention_post(self, path):
        def hook(module, args, kwargs, output):
            ops = module.__dict__.pop("_bertspec_ops")
            ops.__exit__(None, None, None)
            name = self._name(path)
            with torch.no_grad():
                self._record_attention_internals(name, ops)
            self.record(name, output[0] if isinstance(output, tuple) else output)
        return hook

    def _record_attention_internals(self, name, ops):
        if ops.sdpa is not None:
            scores, masked, probs = _sdpa_internals(*ops.sdpa)
            source = "derived"
        elif ops.softmax is not None:
            masked, probs = ops.softmax
            scores = ops.scores if ops.mask is not None else masked
            source = "observed"
        else:
            raise RuntimeError(f"{name}: attention ran neither softmax nor scaled_dot_product_attention; unknown implementation")
        self.record(f"{name}:scores", scores, source)
        self.record(f"{name}:scores+mask", masked, source)
        self.record(f"{name}:probs", probs, source)


def trace_forward(model, keep_tensors: bool = False, **inputs):
    """Run ``model(**inputs)`` under a Tracer; return (trace, model output)."""
    with Tracer(model, keep_tensors=keep_tensors) as tracer, torch.no_grad():
        output = model(**inputs)
    return tracer.trace, output
