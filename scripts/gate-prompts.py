#!/usr/bin/env python3
"""Task conditioning of the sensing gate: does the prompt decide the support?

Each prompt calibrates the gate on itself (`gate run --policy static`: the k MLP blocks with the
most activation energy over the prompt's tokens, checkpoint neuron order so supports compare
across prompts), then we compare supports by Jaccard overlap, averaged over layers: within a
prompt type vs across types. Usage: scripts/gate-prompts.py [--cli build/app/nestscope-cli]
[--active 0.25] [--block 16]
"""
import argparse
import itertools
import json
import subprocess

PROMPTS = {
    "speaker headers": [
        "KING RICHARD III:\nQUEEN ELIZABETH:\nGLOUCESTER:\nBUCKINGHAM:\nKING RICHARD III:\n",
        "ROMEO:\nJULIET:\nNURSE:\nROMEO:\nFRIAR LAURENCE:\nJULIET:\n",
        "MENENIUS:\nCORIOLANUS:\nVOLUMNIA:\nSICINIUS:\nBRUTUS:\nCOMINIUS:\n",
    ],
    "verse": [
        "But soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n",
        "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n",
        "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n",
    ],
    "plain prose": [
        "the cat sat on the mat and the dog ran to the park to see the ducks in the pond",
        "we went to the shop to buy some bread and milk and then we walked back home again",
        "a small boat was tied to the dock near the old mill where the river turns to the east",
    ],
}


def support(cli, prompt, active, block):
    out = subprocess.run([cli, "gate", "run", "--prompt", prompt, "--policy", "static", "--active", str(active),
                          "--block", str(block), "--no-cluster", "-n", "1", "--json"],
                         check=True, capture_output=True, text=True).stdout
    return [set(layer["blocks"]) for layer in json.loads(out)["tokens"][0]["layers"]]


def jaccard(a, b):
    return sum(len(x & y) / len(x | y) for x, y in zip(a, b)) / len(a)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", default="build/app/nestscope-cli")
    ap.add_argument("--active", type=float, default=0.25)
    ap.add_argument("--block", type=int, default=16)
    args = ap.parse_args()
    supports = {(t, i): support(args.cli, p, args.active, args.block)
                for t, ps in PROMPTS.items() for i, p in enumerate(ps)}
    within, across = [], []
    for (ka, sa), (kb, sb) in itertools.combinations(supports.items(), 2):
        (within if ka[0] == kb[0] else across).append(jaccard(sa, sb))
    per_type = {t: sum(jaccard(supports[(t, i)], supports[(t, j)]) for i, j in itertools.combinations(range(3), 2)) / 3
                for t in PROMPTS}
    print(json.dumps({"active": args.active, "block": args.block,
                      "within_type_jaccard": sum(within) / len(within),
                      "across_type_jaccard": sum(across) / len(across),
                      "within_by_type": per_type}, indent=2))


if __name__ == "__main__":
    main()
