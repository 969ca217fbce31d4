"""The tracer's peers, nnsight and TransformerLens, recording the same forward as bertspec's tracer does.

Each adapter is built from (model, batch, checkpoint folder, tokenizer), records
a forward when called on a batch, returning (its records, the logits), and says
which tensors its records hold (``held``). spec/test_p4_2b_tracer_cost.py times
them beside the tracer. They are an optional extra (``pip install -e .[peers]``):
without it, building one skips the test that asked for it and says why.
"""

import copy
import warnings

import pytest
import torch

from bertspec.models.inputs import Batch
from bertspec.tracing.trace import trace_forward

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
