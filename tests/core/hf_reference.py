#!/usr/bin/python3
"""Reference forward pass in PyTorch for a Hugging Face model folder (GPT-2, Llama, Qwen2, Mistral or
GPT-NeoX).

Written from the Hugging Face modeling code's conventions, independently of NestScope: it reads
config.json and model.safetensors (or the shards of model.safetensors.index.json) by hand, with
Hugging Face tensor names and layouts (GPT-2's Conv1D [in, out] and fused c_attn; Llama's
rotate_half rotary embedding, repeated key/value heads, RMSNorm and SwiGLU; GPT-NeoX's per-head
fused query_key_value, partial rotary and parallel residual; Qwen2's q/k/v biases; Mistral's
sliding-window mask), and prints the
logits for the given token ids as JSON.
usage: hf_reference.py FOLDER ID [ID ...]
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = t.to(torch.float32)
    return out


def load(folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return cfg, read_safetensors(single)
    index = json.load(open(os.path.join(folder, "model.safetensors.index.json")))
    w = {}
    for shard in sorted(set(index["weight_map"].values())):
        w.update(read_safetensors(os.path.join(folder, shard)))
    return cfg, w


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACT = {"gelu_new": gelu_new, "gelu": F.gelu, "relu": F.relu, "silu": F.silu}


def gpt2(cfg, w, ids):
    w = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in w.items()}
    T, C, H = len(ids), cfg["n_embd"], cfg["n_head"]
    hd = C // H
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    act = ACT[cfg.get("activation_function", "gelu_new")]
    x = w["wte.weight"][ids] + w["wpe.weight"][:T]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)

    def conv1d(h, name):  # Conv1D: y = h @ W + b with W [in, out]
        return h @ w[name + ".weight"] + w[name + ".bias"]

    for l in range(cfg["n_layer"]):
        p = f"h.{l}."
        h = F.layer_norm(x, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        q, k, v = conv1d(h, p + "attn.c_attn").split(C, dim=-1)
        q, k, v = (t.view(T, H, hd).transpose(0, 1) for t in (q, k, v))
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).masked_fill(mask, float("-inf")).softmax(-1)
        x = x + conv1d((att @ v).transpose(0, 1).reshape(T, C), p + "attn.c_proj")
        h = F.layer_norm(x, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        x = x + conv1d(act(conv1d(h, p + "mlp.c_fc")), p + "mlp.c_proj")
    x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"], eps)
    head = w["wte.weight"] if cfg.get("tie_word_embeddings", True) else w["lm_head.weight"]
    return x @ head.t()


def rotary_tables(T, dim, base):
    """cos and sin [T, dim] of HF's rotary embedding over `dim` channels (inv_freq in float32)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = torch.outer(torch.arange(T, dtype=torch.int64).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def llama(cfg, w, ids):
    T, C, H = len(ids), cfg["hidden_size"], cfg["num_attention_heads"]
    KVH = cfg.get("num_key_value_heads", H)
    hd = C // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    act = ACT[cfg.get("hidden_act", "silu")]
    cos, sin = rotary_tables(T, hd, cfg.get("rope_theta", 10000.0))
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    window = cfg.get("sliding_window") if cfg["model_type"] == "mistral" or cfg.get("use_sliding_window") else None
    if window:  # key j is out of reach of query i once i - j >= window
        i = torch.arange(T).view(-1, 1)
        mask = mask | (i - torch.arange(T).view(1, -1) >= window)
    # Qwen2 carries q/k/v biases (and no o bias) whatever attention_bias says; the others follow it.
    biased = cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)

    def lin(h, name):
        bias = w.get(name + ".bias")
        if bias is not None and not biased and "self_attn" in name:
            raise SystemExit(f"{name}.bias present but the config has no attention bias")
        return F.linear(h, w[name + ".weight"], bias)

    x = w["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = lin(h, p + "self_attn.q_proj").view(T, H, hd).transpose(0, 1)
        k = lin(h, p + "self_attn.k_proj").view(T, KVH, hd).transpose(0, 1)
        v = lin(h, p + "self_attn.v_proj").view(T, KVH, hd).transpose(0, 1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // KVH, dim=0), v.repeat_interleave(H // KVH, dim=0)  # repeat_kv
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).masked_fill(mask, float("-inf")).softmax(-1)
        x = x + lin((att @ v).transpose(0, 1).reshape(T, C), p + "self_attn.o_proj")
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        x = x + lin(act(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return x @ head.t()


def gpt_neox(cfg, w, ids):
    T, C, H = len(ids), cfg["hidden_size"], cfg["num_attention_heads"]
    hd = C // H
    rd = int(hd * cfg.get("rotary_pct", 0.25))
    eps = cfg.get("layer_norm_eps", 1e-5)
    act = ACT[cfg.get("hidden_act", "gelu")]
    cos, sin = rotary_tables(T, rd, cfg.get("rotary_emb_base", 10000))
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)

    def lin(h, name):
        return F.linear(h, w[name + ".weight"], w.get(name + ".bias"))

    def ln(h, name):
        return F.layer_norm(h, (C,), w[name + ".weight"], w[name + ".bias"], eps)

    def rope(t):  # rotary on the first rd channels of each head only
        r, rest = t[..., :rd], t[..., rd:]
        return torch.cat((r * cos + rotate_half(r) * sin, rest), dim=-1)

    x = w["gpt_neox.embed_in.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"gpt_neox.layers.{l}."
        qkv = lin(ln(x, p + "input_layernorm"), p + "attention.query_key_value").view(T, H, 3 * hd)
        q, k, v = (qkv[..., i * hd:(i + 1) * hd].transpose(0, 1) for i in range(3))
        q, k = rope(q), rope(k)
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).masked_fill(mask, float("-inf")).softmax(-1)
        a = lin((att @ v).transpose(0, 1).reshape(T, C), p + "attention.dense")

        def mlp(h):
            return lin(act(lin(h, p + "mlp.dense_h_to_4h")), p + "mlp.dense_4h_to_h")

        if cfg.get("use_parallel_residual", True):
            x = x + a + mlp(ln(x, p + "post_attention_layernorm"))
        else:
            x = x + a
            x = x + mlp(ln(x, p + "post_attention_layernorm"))
    x = ln(x, "gpt_neox.final_layer_norm")
    head = w["gpt_neox.embed_in.weight"] if cfg.get("tie_word_embeddings", False) else w["embed_out.weight"]
    return x @ head.t()


def main():
    folder, ids = sys.argv[1], [int(a) for a in sys.argv[2:]]
    cfg, w = load(folder)
    with torch.no_grad():
        logits = {"gpt2": gpt2, "llama": llama, "qwen2": llama, "mistral": llama,
                  "gpt_neox": gpt_neox}[cfg["model_type"]](cfg, w, torch.tensor(ids))
    print(json.dumps(logits.tolist()))


if __name__ == "__main__":
    main()
