#!/usr/bin/env python3
"""Markdown tables from a stories260K frontier file (scripts/stories260k-experiment.sh).
usage: table.py runs/stories260K/frontier.jsonl [file with the dense row, e.g. for frontier-r2.jsonl]"""
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
dense_rows = [json.loads(l) for l in open(sys.argv[2 if len(sys.argv) > 2 else 1]) if l.strip()]
dense_lin = next(r["linear_macs"] for r in dense_rows if r["method"] == "dense")
print("| series | point | linear MACs (% dense) | MACs/token (% dense) | params | top-1 agreement | KL (nats) | token acc. | support F1 | head F1 |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if r.get("error"):
        print(f"| {r['method']} | {r['label']} | error: {r['error']} |")
        continue
    f1 = r.get("support_f1", -1)
    hf1 = r.get("head_f1", -1)
    print(f"| {r['method']} | {r['label']} | {100 * r['linear_macs'] / dense_lin:.0f}% | {100 * r['mac_fraction']:.0f}% | "
          f"{r['params']:,} | {100 * r['top1_agreement']:.1f}% | {r['kl']:.3f} | {100 * r['token_accuracy']:.1f}% | "
          f"{'' if f1 < 0 else f'{f1:.3f}'} | {'' if hf1 < 0 else f'{hf1:.3f}'} |")
