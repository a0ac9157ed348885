#!/usr/bin/env python3
"""Writes a GPT-2 Hugging Face folder (config.json, model.safetensors in F32, tokenizer.json) as a
GGUF file for llama.cpp, so scripts/bench-real.sh can run llama.cpp on the very weights NestScope
runs. Needs numpy and llama.cpp's own `gguf` Python package (GGUF_PY: its gguf-py folder).

    GGUF_PY=llama.cpp/gguf-py scripts/gguf-gpt2.py FOLDER OUT.gguf f32|f16|bf16

Matrices are written in the asked type, norms and biases in F32 (as llama.cpp's converter does);
GPT-2's Conv1D weights [in, out] are transposed to [out, in]; the head is tied to the embedding.
"""
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.environ.get("GGUF_PY", "gguf-py"))
import gguf  # noqa: E402


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, rec in header.items():
        if name == "__metadata__":
            continue
        if rec["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {rec['dtype']}; this writer reads F32 folders")
        a, b = rec["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=np.float32).reshape(rec["shape"])
    return out


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("f32", "f16", "bf16"):
        raise SystemExit(__doc__)
    folder, out_path, kind = sys.argv[1:]
    cfg = json.load(open(os.path.join(folder, "config.json")))
    if cfg.get("model_type") != "gpt2":
        raise SystemExit(f"{folder}: model_type {cfg.get('model_type')!r}, expected 'gpt2'")
    t = read_safetensors(os.path.join(folder, "model.safetensors"))
    t = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in t.items()}
    tok = json.load(open(os.path.join(folder, "tokenizer.json")))

    w = gguf.GGUFWriter(out_path, "gpt2")
    w.add_name(os.path.basename(os.path.normpath(folder)))
    w.add_context_length(cfg["n_positions"])
    w.add_embedding_length(cfg["n_embd"])
    w.add_feed_forward_length(cfg.get("n_inner") or 4 * cfg["n_embd"])
    w.add_block_count(cfg["n_layer"])
    w.add_head_count(cfg["n_head"])
    w.add_layer_norm_eps(cfg["layer_norm_epsilon"])
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16}[kind]
    w.add_file_type(file_type)

    vocab = tok["model"]["vocab"]
    tokens = [None] * len(vocab)
    for text, i in vocab.items():
        tokens[i] = text
    special = {a["id"] for a in tok.get("added_tokens", []) if a.get("special")}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))])
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.get("bos_token_id", 50256))
    w.add_eos_token_id(cfg.get("eos_token_id", 50256))

    def matrix(name, a):
        a = np.ascontiguousarray(a)
        if kind == "f16":
            w.add_tensor(name, a.astype(np.float16))
        elif kind == "bf16":
            w.add_tensor(name, gguf.quants.quantize(a, gguf.GGMLQuantizationType.BF16),
                         raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor(name, a)

    def vector(name, a):
        w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))

    matrix("token_embd.weight", t["wte.weight"])
    vector("position_embd.weight", t["wpe.weight"])  # indexed, not multiplied: F32 as the converter writes it
    for i in range(cfg["n_layer"]):
        p, b = f"h.{i}.", f"blk.{i}."
        vector(b + "attn_norm.weight", t[p + "ln_1.weight"])
        vector(b + "attn_norm.bias", t[p + "ln_1.bias"])
        matrix(b + "attn_qkv.weight", t[p + "attn.c_attn.weight"].T)
        vector(b + "attn_qkv.bias", t[p + "attn.c_attn.bias"])
        matrix(b + "attn_output.weight", t[p + "attn.c_proj.weight"].T)
        vector(b + "attn_output.bias", t[p + "attn.c_proj.bias"])
        vector(b + "ffn_norm.weight", t[p + "ln_2.weight"])
        vector(b + "ffn_norm.bias", t[p + "ln_2.bias"])
        matrix(b + "ffn_up.weight", t[p + "mlp.c_fc.weight"].T)
        vector(b + "ffn_up.bias", t[p + "mlp.c_fc.bias"])
        matrix(b + "ffn_down.weight", t[p + "mlp.c_proj.weight"].T)
        vector(b + "ffn_down.bias", t[p + "mlp.c_proj.bias"])
    vector("output_norm.weight", t["ln_f.weight"])
    vector("output_norm.bias", t["ln_f.bias"])

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
