#!/usr/bin/env python3
"""Build a tiny random-weight Llama model + tokenizer locally (no model hub).

Run with the data-plane venv's python (it needs torch, transformers, tokenizers):

    "$VENV/bin/python" e2e/dataplane/tiny_model.py OUT_DIR

- 4096-token byte-level BPE trained on the first 400 ``.py`` files of the Python
  stdlib of the running interpreter (deterministic for a given Python build);
- ``PreTrainedTokenizerFast`` (bos ``<s>``, eos ``</s>``, unk ``<unk>``, pad ``</s>``) with a
  trivial chat template;
- ``LlamaForCausalLM``: hidden 128, intermediate 256, 2 layers, 2 heads, 2 KV heads
  (head_dim 64, safe for vLLM's CPU attention kernels), max positions 2048, random init with
  seed 0, saved as bf16 safetensors (~2.7 MB).

Idempotent: if OUT_DIR already holds a complete model (config, weights, tokenizer), nothing is
rebuilt. The directory is written atomically (built in a sibling temp dir, then renamed), so
an interrupted run never leaves a half-written model behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"


def is_complete(out: str) -> bool:
    return all(os.path.isfile(os.path.join(out, f)) for f in REQUIRED_FILES)


def build(out: str) -> None:
    import glob
    import sysconfig

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(stdlib + "/**/*.py", recursive=True))[:400]
    if not files:
        raise SystemExit(f"no .py files found under {stdlib} to train the tokenizer")

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train(
        files,
        trainers.BpeTrainer(
            vocab_size=4096,
            special_tokens=["<unk>", "<s>", "</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out)

    cfg = LlamaConfig(
        vocab_size=len(hf),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=hf.bos_token_id,
        eos_token_id=hf.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out, safe_serialization=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", help="directory to write the model into")
    ap.add_argument("--force", action="store_true", help="rebuild even if present")
    args = ap.parse_args(argv)

    out = os.path.abspath(args.out_dir)
    if is_complete(out) and not args.force:
        print(f"tiny model already present: {out}")
        return 0

    t0 = time.monotonic()
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-model-", dir=parent)
    os.chmod(tmp, 0o755)
    try:
        build(tmp)
        if not is_complete(tmp):
            raise SystemExit(f"build did not produce {REQUIRED_FILES} in {tmp}")
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"tiny model built in {time.monotonic() - t0:.1f}s: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
