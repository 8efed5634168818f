#!/usr/bin/env python3
"""tokenize_jsonl.py: text or chat data to the token JSONL `loragen train` reads.

The only Python in loragen, and optional: it uses the Hugging Face `tokenizers` package
(`pip install tokenizers`) and a model's tokenizer.json. Output lines are {"input_ids": [...], "labels": [...]}
with -100 on every position that is not trained on; the trainer applies the causal shift itself.

  text  one {"text": "..."} per line (--field picks another key): every token is trained on.
  chat  one {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]} per line: the
        conversation is rendered with --template and only the assistant turns (their content and the
        end-of-turn marker) are trained on; system and user turns and the role headers are masked.

    python3 tools/tokenize_jsonl.py --tokenizer models/llama/tokenizer.json --format chat \\
        --template llama3 --in chats.jsonl --out train.jsonl --max-length 4096

Templates: llama3 (<|start_header_id|>role<|end_header_id|> ... <|eot_id|>), chatml (<|im_start|>role ...
<|im_end|>, Qwen2.5), plain ("User: ...\\nAssistant: ...\\n"). Samples longer than --max-length are cut
(reported on stderr). Every error names the input line.
"""
import argparse
import json
import sys

TEMPLATES = {
    # (text before a turn, text after it); {role} is replaced. The llama3 prefix starts the conversation.
    "llama3": ("<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>", "<|begin_of_text|>"),
    "chatml": ("<|im_start|>{role}\n", "<|im_end|>\n", ""),
    "plain": ("{Role}: ", "\n", ""),
}


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False).ids if text else []


def chat_sample(tok, template, messages, where):
    head, tail, start = TEMPLATES[template]
    ids, labels = [], []
    piece = encode(tok, start)
    ids += piece
    labels += [-100] * len(piece)
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: messages[{i}] needs a string 'role' and 'content'")
        role = m["role"]
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"{where}: messages[{i}].role '{role}' is not system, user or assistant")
        h = encode(tok, head.format(role=role, Role=role.capitalize()))
        c = encode(tok, m["content"])
        t = encode(tok, tail)
        trained = role == "assistant"
        ids += h + c + t
        labels += [-100] * len(h) + (c + t if trained else [-100] * (len(c) + len(t)))
    if all(l == -100 for l in labels):
        raise ValueError(f"{where}: no assistant turn: nothing to train on")
    return ids, labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json of the model")
    ap.add_argument("--in", dest="inp", required=True, help="input JSONL")
    ap.add_argument("--out", required=True, help="output JSONL")
    ap.add_argument("--format", choices=("text", "chat"), default="text")
    ap.add_argument("--template", choices=sorted(TEMPLATES), default="llama3")
    ap.add_argument("--field", default="text", help="the text field of --format text")
    ap.add_argument("--bos", type=int, default=None, help="a token id to put first in every text sample")
    ap.add_argument("--max-length", type=int, default=0, help="cut samples to this many tokens (0: no limit)")
    args = ap.parse_args()
    try:
        from tokenizers import Tokenizer
    except ImportError:
        sys.exit("tokenize_jsonl.py needs the Hugging Face tokenizers package: pip install tokenizers")
    tok = Tokenizer.from_file(args.tokenizer)
    written = cut = 0
    with open(args.inp, encoding="utf-8") as fin, open(args.out, "w", encoding="utf-8") as fout:
        for lineno, line in enumerate(fin, 1):
            if not line.strip():
                continue
            where = f"{args.inp}:{lineno}"
            try:
                obj = json.loads(line)
                if args.format == "chat":
                    ids, labels = chat_sample(tok, args.template, obj.get("messages"), where)
                else:
                    text = obj.get(args.field)
                    if not isinstance(text, str) or not text:
                        raise ValueError(f"{where}: needs a non-empty string field '{args.field}'")
                    ids = ([args.bos] if args.bos is not None else []) + encode(tok, text)
                    labels = list(ids)
            except (ValueError, json.JSONDecodeError) as e:
                sys.exit(f"error: {e}" if str(e).startswith(args.inp) else f"error: {where}: {e}")
            if args.max_length and len(ids) > args.max_length:
                ids, labels = ids[: args.max_length], labels[: args.max_length]
                cut += 1
            fout.write(json.dumps({"input_ids": ids, "labels": labels}) + "\n")
            written += 1
    print(f"{args.out}: {written} samples" + (f", {cut} cut to {args.max_length} tokens" if cut else ""),
          file=sys.stderr)


if __name__ == "__main__":
    main()
