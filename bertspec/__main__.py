"""Command line: ``python -m bertspec trace "北京是中国的首[MASK]。" [--model PATH]``.

Errors a user can fix (a bad folder, an over-long input) print one line and exit 2.
"""

import argparse
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _trace(args) -> None:
    from bertspec import loading
    from bertspec.inputs import encode

    bert = loading.load(args.model, args.attn_implementation, args.device)
    batch = encode(bert.tokenizer, args.text, bert.config.max_position_embeddings, bert.device)
    from bertspec.trace import trace_forward

    trace, output = trace_forward(bert.model, **batch.as_kwargs())
    tokens = bert.tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    print(f"model: {bert.source}  attention: {bert.attn_implementation}  device: {bert.device}")
    print(f"tokens: {' '.join(tokens)}\n")
    print(trace.table())
    if not bert.has_mlm_head:
        print("\nno MLM-head weights in this checkpoint (encoder only): no predictions shown")
    elif bert.tokenizer.mask_token_id in batch.input_ids[0].tolist():
        logits = output.logits[0]
        for pos in (batch.input_ids[0] == bert.tokenizer.mask_token_id).nonzero().flatten().tolist():
            top = logits[pos].softmax(-1).topk(5)
            guesses = ", ".join(f"{bert.token(i)} {p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
            print(f"\n[MASK] at position {pos}: {guesses}")


def _random_checkpoint(args) -> None:
    from bertspec.checkpoints import write_random_checkpoint

    write_random_checkpoint(args.out, encoder_only=args.encoder_only)
    print(f"wrote a random bert-base-chinese-sized checkpoint to {args.out}")


def _build_default_model(args) -> None:
    from bertspec import default_model

    default_model.main([args.out] if args.out else [])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bertspec", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trace", help="print every step of one forward pass")
    t.add_argument("text")
    t.add_argument("--model", metavar="PATH", default=None, help="local checkpoint folder (default: the bundled model)")
    t.add_argument("--attn-implementation", choices=("eager", "sdpa"), default="eager")
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    t.set_defaults(run=_trace)
    r = sub.add_parser("random-checkpoint", help="write a random bert-base-chinese-sized checkpoint folder")
    r.add_argument("out")
    r.add_argument("--encoder-only", action="store_true", help="save a BertModel (no MLM head), like sentence-embedding models")
    r.set_defaults(run=_random_checkpoint)
    b = sub.add_parser("build-default-model", help="rebuild the bundled default model from fixtures/corpus.zh.txt")
    b.add_argument("out", nargs="?", default=None)
    b.set_defaults(run=_build_default_model)
    return p


def main(argv=None) -> int:
    from bertspec.inputs import InputTooLongError
    from bertspec.loading import CheckpointError

    args = parser().parse_args(argv)
    try:
        args.run(args)
    except (CheckpointError, InputTooLongError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
