"""Command line: ``python -m bertspec trace "北京是中国的首[MASK]。" [--model PATH] [--html PAGE]`` (or ``bertspec trace …``).

``--model fixtures/family/gpt2`` (``llama``, ``t5``) traces a bundled decoder or T5 of chapter P8: the steps, then
its top guesses for the next token (T5's: for the span its text marks with <extra_id_0>); the page is the BERT
family's only.

Errors a user can fix (a bad folder, an over-long input, a page that cannot be written) print one line and exit 2;
libraries' own warnings are silenced, so that line is all the user sees.
"""

import argparse
import json
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@contextmanager
def _quiet_libraries():
    """transformers' tokenizer and load-report warnings would come before our one line; restored after."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


class PageError(ValueError):
    """The --html page cannot be written there; the message says why."""


def _check_page(path: Path) -> None:
    """Refuse a page that cannot be written before the model is loaded, not after a minute of tracing."""
    if path.is_dir():
        raise PageError(f"{path} is a folder; name the page's file, e.g. {path / 'trace.html'}")
    if not path.parent.is_dir():
        raise PageError(f"{path}: no such folder {path.parent}")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PageError(f"{path}: not writable")


def _trace(args) -> None:
    from bertspec.models import validate

    beyond = None if args.model is None else _beyond_encoder(args.model)
    if args.html is not None:
        _check_page(args.html)
    if args.model is not None and beyond is None:
        validate.check_folder(args.model)  # a bad folder fails before torch is imported
    with _quiet_libraries():
        if beyond is None:
            _print_trace(args)
        else:
            _print_generative_trace(args, beyond)


def _beyond_encoder(model: str):
    """The bundled decoder or T5 (chapter P8) a --model folder holds, known by its config's model_type; None for
    any other folder, which is checked as a BERT-family checkpoint (and told what is wrong with it)."""
    from bertspec.models import generative, source
    from bertspec.models.validate import CheckpointError

    folder = Path(model).expanduser()
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):  # no folder, no config, not a JSON object: check_folder says which
        return None
    a = generative.of_model_type(model_type)
    if a is None:
        return None
    bundled = source.resolve(family=a.family)
    if folder.resolve() != bundled.folder.resolve():
        raise CheckpointError(f"{model}: model_type is {model_type!r}; beyond the BERT family the trace command "
                              f"loads only the bundled {a.name} ({bundled.folder})")
    return bundled


def _print_generative_trace(args, origin) -> None:
    """The steps of a decoder's or T5's forward, then its top guesses for the token after the last position."""
    from bertspec.handbook import trace_page
    from bertspec.models import loading
    from bertspec.models.validate import CheckpointError
    from bertspec.tracing.trace import trace_forward

    try:
        model = loading.load_generative(origin, args.attn_implementation, args.device)
    except loading.UnsupportedImplementation as err:  # T5's sdpa on transformers 4.57
        raise CheckpointError(f"{args.attn_implementation}: {err}", "attn_implementation") from None
    batch, notes = _generative_inputs(model, args.text, args.truncate, args.device)
    tokens = model.tokenizer.convert_ids_to_tokens
    print(f"model: {model.source} ({model.anatomy.name})  attention: {model.attn_implementation}  "
          f"device: {args.device}")
    print(f"tokens: {' '.join(tokens(batch['input_ids'][0]))}")
    if "decoder_input_ids" in batch:
        print(f"decoder tokens: {' '.join(tokens(batch['decoder_input_ids'][0]))}")
    for note in notes:
        print(f"note: {note}")
    print()
    trace, output = trace_forward(model.model, keep_tensors=args.html is not None, **batch)
    print(trace.table())
    top = output.logits[0, -1].float().softmax(-1).topk(GUESSES)
    where = (f"{SPAN_MARK} begins with" if "decoder_input_ids" in batch
             else f"next token after {tokens(batch['input_ids'][0, -1].item())}")
    guesses = list(zip(tokens(top.indices.tolist()), top.values.tolist()))
    print(f"\n{where}: {', '.join(f'{t} {p:.3f}' for t, p in guesses)}")
    if args.html is not None:
        page = trace_page.GenerativeTracePage(model, args.text, batch, trace, (where, guesses), notes,
                                              args.handbook or trace_page.HANDBOOK)
        _write_page(args.html, page.html())
        print(f"\nwrote {args.html}")


SPAN_MARK = "<extra_id_0>"  # T5's first sentinel: the span its decoder writes after the start token
GUESSES = 5


def _generative_inputs(model, text: str, truncate: bool, device) -> tuple[dict, list[str]]:
    """The forward's inputs for a decoder or T5, and what they do that a user may not expect."""
    import torch

    from bertspec.models import generative, inputs

    a, tokenizer, notes = model.anatomy, model.tokenizer, []
    positions = model.config.max_position_embeddings if a.position_embeddings else None  # a table has that many rows
    batch = dict(tokenizer(text, return_tensors="pt", truncation=bool(truncate and positions), max_length=positions))
    if positions is not None:
        inputs.check_length(batch["input_ids"].shape[1], positions)
    if batch["input_ids"].shape[1] == 0:  # nothing to continue from: start where generate starts, at bos
        batch = {"input_ids": torch.tensor([[tokenizer.bos_token_id]]), "attention_mask": torch.tensor([[1]])}
        notes.append(f"the text is empty: the model sees only its bos token {tokenizer.bos_token}")
    if a.kind == generative.ENCODER_DECODER:  # the decoder starts, then names the span it writes
        start = [model.config.decoder_start_token_id, tokenizer.convert_tokens_to_ids(SPAN_MARK)]
        batch["decoder_input_ids"] = torch.tensor([start])
        if SPAN_MARK not in text:
            notes.append(f"the text marks no span with {SPAN_MARK}: {a.name} was trained to fill the spans it marks")
    return {key: t.to(device) for key, t in batch.items()}, notes


def _print_trace(args) -> None:
    from bertspec.handbook import trace_page
    from bertspec.models import loading
    from bertspec.models.validate import CheckpointError
    from bertspec.tracing.trace import trace_forward

    try:
        bert = loading.load(args.model, args.attn_implementation, args.device)
    except loading.UnsupportedImplementation as err:  # ELECTRA's sdpa on transformers 4.57
        raise CheckpointError(f"{args.attn_implementation}: {err}", "attn_implementation") from None
    mask = bert.tokenizer.mask_token
    text = args.text.replace("[MASK]", mask)  # RoBERTa's tokenizers write it <mask>
    batch = bert.encode(text, truncate=args.truncate)
    tokens = bert.tokens(batch)
    needed = len(bert.tokenizer(text)["input_ids"]) if args.truncate else len(tokens)
    print(f"model: {bert.source} ({bert.anatomy.name})  attention: {bert.attn_implementation}  device: {bert.device}")
    print(f"tokens: {' '.join(tokens)}")
    notes = _notes(bert, batch, tokens)
    if text != args.text:
        notes.insert(0, f"[MASK] is written {mask} in this tokenizer: the text was read as {text!r}")
    if needed > len(tokens):
        notes.insert(0, f"--truncate: the text needs {needed} tokens (with {tokens[0]}/{tokens[-1]}); the first "
                        f"{len(tokens)}, all the model has positions for, are traced")
    for note in notes:
        print(f"note: {note}")
    print()
    model = bert.model if bert.has_mlm_head else bert.encoder
    trace, output = trace_forward(model, keep_tensors=args.html is not None, **batch.as_kwargs())
    print(trace.table())
    guesses = trace_page.top_guesses(bert, batch, output) if bert.has_mlm_head else None
    if guesses is None:
        print("\nno MLM-head weights in this checkpoint (encoder only): the trace stops at the encoder, no predictions")
    for pos, top in guesses or []:
        print(f"\n{mask} at position {pos}: {', '.join(f'{token} {p:.3f}' for token, p in top)}")
    if args.html is not None:
        page = trace_page.TracePage(bert, text, batch, trace, guesses, notes, args.handbook or trace_page.HANDBOOK)
        _write_page(args.html, page.html())
        print(f"\nwrote {args.html}")


def _write_page(path: Path, html: str) -> None:
    from bertspec.handbook.atomic import write_atomically

    try:
        write_atomically(path, html)
    except OSError as err:  # the folder went away or filled up while the model ran
        raise PageError(f"{path}: {err.strerror or err}") from None


def _notes(bert, batch, tokens) -> list[str]:
    """What the input does that a user may not expect: typed special tokens are tokens, unknown characters are [UNK]."""
    tok = bert.tokenizer
    typed = [t for t in tokens[1:-1] if t in (tok.pad_token, tok.cls_token, tok.sep_token)]
    notes = []
    # Empty is a valid input (the model sees its special tokens alone), but rarely what was meant: say so, then trace.
    if len(tokens) == 2:
        notes.append(f"the text is empty (no token of its own): the model sees only {' '.join(tokens)}")
    if typed:
        notes.append(f"the text contains {', '.join(sorted(set(typed)))}: typed in the text they are ordinary tokens "
                     "with attention_mask 1 (a typed [PAD] is not padding)")
    if len(tokens) > 2 and all(t == tok.unk_token for t in tokens[1:-1]):
        notes.append(f"no character of the text is in this vocabulary: every token is {tok.unk_token}")
    if bert.anatomy.family != "bert":
        notes.append(f"every step of {bert.anatomy.name} is traced; bertspec's from-scratch reference "
                     "(bertspec/proof/reference.py) spells out BERT only, so the claims that recompute with it skip here")
    return notes


def _random_checkpoint(args) -> None:
    from bertspec.builders.checkpoints import write_random_checkpoint

    write_random_checkpoint(args.out, encoder_only=args.encoder_only)
    print(f"wrote a random bert-base-chinese-sized checkpoint to {args.out}")


def _zoo(args) -> None:
    from bertspec.builders import zoo

    zoo.main(args.out)


def _build_default_model(args) -> None:
    from bertspec.models.source import BEYOND_ENCODERS

    if args.family in BEYOND_ENCODERS:
        from bertspec.builders import beyond_encoders

        beyond_encoders.main(args.out, args.family)
    else:
        from bertspec.builders import default_model

        default_model.main(args.out, args.family)


# How each choice a CheckpointError concerns is spelled on this command line.
OPTIONS = {"model": "--model", "device": "--device", "attn_implementation": "--attn-implementation"}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the problem and the valid values), exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    from bertspec.models.source import (  # no torch before a bad folder is reported
        ATTN_IMPLEMENTATIONS, BEYOND_ENCODERS, DEVICES, FAMILIES,
    )

    p = OneLineParser(prog="python -m bertspec", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    t = sub.add_parser("trace", help="print every step of one forward pass")
    t.add_argument("text")
    t.add_argument("--model", metavar="PATH", default=None, help="local checkpoint folder (default: the bundled model)")
    t.add_argument("--attn-implementation", choices=ATTN_IMPLEMENTATIONS, default="eager")
    t.add_argument("--device", choices=DEVICES, default="cpu")
    t.add_argument("--truncate", action="store_true", help="cut a text longer than the model's positions to fit")
    t.add_argument("--html", metavar="PAGE", type=Path, default=None,
                   help="also write one offline page: the tokens, each layer's mask, the attention view, the guesses")
    t.add_argument("--handbook", metavar="URL", default=None,
                   help="the handbook the page's claim links point to (default: report.html beside the page)")
    t.set_defaults(run=_trace)
    r = sub.add_parser("random-checkpoint", help="write a random bert-base-chinese-sized checkpoint folder")
    r.add_argument("out")
    r.add_argument("--encoder-only", action="store_true", help="save a BertModel (no MLM head), like sentence-embedding models")
    r.set_defaults(run=_random_checkpoint)
    z = sub.add_parser("zoo", help="write checkpoints unlike the bundled model (English, encoder-only, 12 layers, ...)")
    z.add_argument("out")
    z.set_defaults(run=_zoo)
    b = sub.add_parser("build-default-model", help="rebuild the bundled model (or a family sibling) from fixtures/corpus.zh.txt")
    b.add_argument("out", nargs="?", default=None, help="default: fixtures/default-model, fixtures/family/<family>")
    b.add_argument("--family", choices=(*FAMILIES, "all", *BEYOND_ENCODERS), default="bert",
                   help="the architecture; all: each BERT-family one, into OUT/<family> when OUT is given; "
                        f"{', '.join(BEYOND_ENCODERS)}: chapter P8's decoders and encoder-decoder")
    b.set_defaults(run=_build_default_model)
    return p


def main(argv=None) -> int:
    from bertspec.models.validate import CheckpointError, InputTooLongError

    args = parser().parse_args(argv)
    try:
        args.run(args)
    except CheckpointError as err:
        print(f"error: {err.line(OPTIONS)}", file=sys.stderr)
        return 2
    except PageError as err:
        print(f"error: --html {err}", file=sys.stderr)
        return 2

    except InputTooLongError as err:  # the library's advice names a tokenizer argument; here the option does it
        advice = f"pass --truncate to trace the first {err.max_positions}"
        print(f"error: {InputTooLongError(err.n_tokens, err.max_positions, advice)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
