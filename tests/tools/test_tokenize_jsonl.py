#!/usr/bin/env python3
"""test_tokenize_jsonl.py: tools/tokenize_jsonl.py on a tokenizer built here (a word-level vocabulary with the
chat templates' special tokens): text samples are trained on whole, chat samples only on the assistant turns,
and bad lines are refused naming the line. Exits 77 (skipped)
where the optional `tokenizers` package is missing."""
import json
import os
import subprocess
import sys
import tempfile

try:
    from tokenizers import Tokenizer, models, pre_tokenizers
except ImportError:
    print("tokenizers is not installed: skipped")
    sys.exit(77)

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
tool = os.path.join(root, "tools", "tokenize_jsonl.py")
words = ["[UNK]", "hello", "world", "how", "are", "you", "fine", "thanks", "system", "user", "assistant", "be",
         "brief", "User:", "Assistant:", "System:"]
specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|im_start|>",
            "<|im_end|>"]
vocab = {w: i for i, w in enumerate(words)}
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
tok.add_special_tokens(specials)
tmp = tempfile.mkdtemp()
tjson = os.path.join(tmp, "tokenizer.json")
tok.save(tjson)


def run(fmt, lines, template="llama3", expect_ok=True):
    src, dst = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
    with open(src, "w") as f:
        f.write("\n".join(lines) + "\n")
    p = subprocess.run([sys.executable, tool, "--tokenizer", tjson, "--in", src, "--out", dst, "--format", fmt,
                        "--template", template], capture_output=True, text=True)
    if expect_ok:
        assert p.returncode == 0, p.stderr
        return [json.loads(l) for l in open(dst)]
    assert p.returncode != 0, "a bad input was accepted"
    return p.stderr


out = run("text", [json.dumps({"text": "hello world"}), "", json.dumps({"text": "how are you"})])
assert [o["input_ids"] for o in out] == [[1, 2], [3, 4, 5]], out
assert all(o["labels"] == o["input_ids"] for o in out)

chat = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "how are you"},
                     {"role": "assistant", "content": "fine thanks"}]}
for template in ("llama3", "chatml", "plain"):
    (o,) = run("chat", [json.dumps(chat)], template)
    ids, labels = o["input_ids"], o["labels"]
    assert len(ids) == len(labels)
    trained = [i for i, l in zip(ids, labels) if l != -100]
    assert trained[:2] == [vocab["fine"], vocab["thanks"]], (template, trained)
    assert vocab["how"] in ids and vocab["how"] not in trained, template
    if template != "plain":
        assert len(trained) == 3, (template, trained)  # the end-of-turn marker is trained on too

err = run("chat", [json.dumps(chat), json.dumps({"messages": [{"role": "user", "content": "hello"}]})],
          expect_ok=False)
assert "in.jsonl:2" in err and "no assistant turn" in err, err
err = run("chat", [json.dumps({"messages": [{"role": "robot", "content": "x"}]})], expect_ok=False)
assert "in.jsonl:1" in err and "robot" in err, err
err = run("text", ["{not json"], expect_ok=False)
assert "in.jsonl:1" in err, err
print("tokenize_jsonl.py: text, chat (llama3, chatml, plain) and bad inputs as expected")
