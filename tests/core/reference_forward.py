#!/usr/bin/python3
"""Reference forward pass in PyTorch for a NestScope checkpoint (used by model tests).

Reads the safetensors file by hand (no extra packages), rebuilds the model from its JSON config
with torch.nn.functional only, and prints the logits for the given token ids as JSON.
usage: reference_forward.py CHECKPOINT ID [ID ...]
"""
import json
import math
import struct
import sys

import torch
import torch.nn.functional as F


def load(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    data = raw[8 + n:]
    tensors = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", name
        b, e = info["data_offsets"]
        tensors[name] = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(info["shape"])
    return json.loads(meta["config"]), tensors


def forward(cfg, w, ids):
    T, C, H = len(ids), cfg["d_model"], cfg["n_heads"]
    hd = C // H
    x = w["tok_emb.weight"][torch.tensor(ids)]
    if cfg["position"] == "learned":
        x = x + w["pos_emb"][:T]
    else:
        pos = torch.arange(T, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, C, 2, dtype=torch.float32) * (-math.log(10000.0) / C))
        pe = torch.zeros(T, C)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)
        x = x + pe
    eps = cfg["ln_eps"]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)

    def lin(h, name):
        return F.linear(h, w[name + ".weight"], w.get(name + ".bias"))

    for l in range(cfg["n_layers"]):
        p = f"blk.{l}."
        h = F.layer_norm(x, (C,), w[p + "ln1.weight"], w[p + "ln1.bias"], eps)
        q, k, v = (lin(h, p + "attn." + n).view(T, H, hd).transpose(0, 1) for n in "qkv")
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        x = x + lin((att @ v).transpose(0, 1).reshape(T, C), p + "attn.o")
        h = F.layer_norm(x, (C,), w[p + "ln2.weight"], w[p + "ln2.bias"], eps)
        h = lin(h, p + "mlp.up")
        h = F.relu(h) if cfg["activation"] == "relu" else F.gelu(h)
        x = x + lin(h, p + "mlp.down")
    x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"], eps)
    if cfg["tied_head"]:
        return x @ w["tok_emb.weight"].T
    return lin(x, "head")


if __name__ == "__main__":
    cfg, weights = load(sys.argv[1])
    ids = [int(a) for a in sys.argv[2:]]
    with torch.no_grad():
        print(json.dumps(forward(cfg, weights, ids).tolist()))
