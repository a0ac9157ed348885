#!/usr/bin/python3
"""The PyTorch-eager peer of nestscope_bench: the same GPT-2 model, the same measurements.

Reads a Hugging Face GPT-2 folder written by `nestscope-cli export --hf DIR` (config.json and
model.safetensors, read by hand: no transformers package) and runs it the way a PyTorch user
would in eager mode — nn.Linear / nn.LayerNorm modules, attention written out, a KV cache that
grows by torch.cat — then measures, like nestscope_bench:
  * batch-1 greedy decode with the KV cache from token id 0 (`--decode-tokens`, best of 5),
  * a 64-token and a 256-token prefill (best of 20 each),
with `--threads` intra-op threads. Prints one JSON object, including the first 64 greedy ids so
the harness can check both programs computed the same thing.
usage: peer_pytorch.py FOLDER [--threads N] [--decode-tokens N]
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# The safetensors reader of the Hugging Face reference checks (plain Python, no transformers).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "core"))
from hf_reference import read_safetensors  # noqa: E402


def without_prefix(weights):
    return {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in weights.items()}


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


ACT = {"gelu_new": gelu_new, "gelu_pytorch_tanh": gelu_new, "gelu": F.gelu, "relu": F.relu}


class Block(nn.Module):
    def __init__(self, d, heads, d_ff, eps, act):
        super().__init__()
        self.heads, self.act = heads, act
        self.ln_1, self.ln_2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.proj = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, x, cache):
        B, T, C = x.shape
        hd = C // self.heads
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, hd).transpose(1, 2) for t in (q, k, v))
        if cache is not None and cache[0] is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        if cache is not None:
            cache[0], cache[1] = k, v
        S = k.size(2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        if T > 1:
            mask = torch.ones(T, S, dtype=torch.bool).tril(S - T)
            att = att.masked_fill(~mask, float("-inf"))
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.c_proj(y)
        return x + self.proj(self.act(self.fc(self.ln_2(x))))


class Gpt2(nn.Module):
    def __init__(self, cfg, w):
        super().__init__()
        d, L = cfg["n_embd"], cfg["n_layer"]
        self.wte = nn.Embedding(cfg["vocab_size"], d)
        self.wpe = nn.Embedding(cfg["n_positions"], d)
        act = ACT[cfg.get("activation_function", "gelu_new")]
        eps = cfg.get("layer_norm_epsilon", 1e-5)
        self.h = nn.ModuleList(Block(d, cfg["n_head"], cfg.get("n_inner") or 4 * d, eps, act) for _ in range(L))
        self.ln_f = nn.LayerNorm(d, eps=eps)
        self.lm_head = nn.Linear(d, cfg["vocab_size"], bias=False)
        with torch.no_grad():
            self.wte.weight.copy_(w["wte.weight"])
            self.wpe.weight.copy_(w["wpe.weight"])
            self.ln_f.weight.copy_(w["ln_f.weight"])
            self.ln_f.bias.copy_(w["ln_f.bias"])
            self.lm_head.weight.copy_(w.get("lm_head.weight", w["wte.weight"]))
            for i, b in enumerate(self.h):
                p = f"h.{i}."
                for ln in ("ln_1", "ln_2"):
                    getattr(b, ln).weight.copy_(w[p + ln + ".weight"])
                    getattr(b, ln).bias.copy_(w[p + ln + ".bias"])
                # GPT-2's Conv1D stores [in, out]; nn.Linear wants [out, in].
                for mine, theirs in (("c_attn", "attn.c_attn"), ("c_proj", "attn.c_proj"), ("fc", "mlp.c_fc"),
                                     ("proj", "mlp.c_proj")):
                    getattr(b, mine).weight.copy_(w[p + theirs + ".weight"].t())
                    getattr(b, mine).bias.copy_(w[p + theirs + ".bias"])

    def forward(self, ids, caches=None, pos0=0):
        T = ids.size(1)
        x = self.wte(ids) + self.wpe(torch.arange(pos0, pos0 + T))
        for i, b in enumerate(self.h):
            x = b(x, caches[i] if caches is not None else None)
        return self.lm_head(self.ln_f(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--decode-tokens", type=int, default=255)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = json.load(open(os.path.join(a.folder, "config.json")))
    if cfg.get("model_type") != "gpt2":
        sys.exit(f"peer_pytorch: {a.folder} is a {cfg.get('model_type')} model; the peer runs gpt2 folders")
    model = Gpt2(cfg, without_prefix(read_safetensors(os.path.join(a.folder, "model.safetensors")))).eval()
    n = min(a.decode_tokens, cfg["n_positions"] - 1)
    out = {"peer": "pytorch-eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
           "parameters": sum(p.numel() for p in model.parameters())}
    with torch.inference_mode():
        best, ids = 1e30, []
        for _ in range(5):
            caches = [[None, None] for _ in model.h]
            x = torch.zeros(1, 1, dtype=torch.long)
            got = []
            t0 = time.perf_counter()
            for i in range(n):
                logits = model(x, caches, pos0=i)
                nxt = int(logits[0, -1].argmax())
                got.append(nxt)
                x = torch.tensor([[nxt]])
            best = min(best, time.perf_counter() - t0)
            ids = got
        out["decode_tokens"] = n
        out["decode_tokens_per_s"] = n / best
        out["greedy_ids"] = ids[:64]
        for T, reps in ((64, 20), (256, 20)):
            T = min(T, cfg["n_positions"])
            prompt = torch.tensor([ids[:T] + [0] * max(0, T - len(ids))])
            tb = 1e30
            for _ in range(reps):
                t0 = time.perf_counter()
                model(prompt)
                tb = min(tb, time.perf_counter() - t0)
            out[f"prefill{T}_ms"] = 1e3 * tb
            out[f"prefill{T}_tokens_per_s"] = T / tb
    print(json.dumps(out))


if __name__ == "__main__":
    main()
