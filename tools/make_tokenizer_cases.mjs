#!/usr/bin/env node
// Generates tests/tokenizer/corpus_cases.jsonl: expected token ids for the texts in
// tests/tokenizer/corpus.json, computed by an independent implementation of the HuggingFace
// tokenizer (transformers.js) from the real Qwen2.5 tokenizer.json. Our C++ tokenizer is tested
// against these ids.
//
// Setup (outside the repository, nothing is committed from it):
//   mkdir /tmp/tjs && cd /tmp/tjs && npm install --ignore-scripts @huggingface/transformers@3
// Run from anywhere:
//   node tools/make_tokenizer_cases.mjs [--tjs /tmp/tjs] [--model ../shared/model] [--out FILE]
//
// Output, one JSON object a line:
//   {"text", "allow_special", "ids", "decoded"[, "decoded_skip_special"]}
// allow_special=false cases use a copy of the tokenizer without its special added tokens, which
// is exactly HF's split_special_tokens=True: special-token text is tokenised as plain text while
// non-special added tokens (e.g. <tool_call>) still match.
// Besides the hand-written texts, a few 10-40 kB documents are assembled deterministically (fixed
// PRNG seeds) from the corpus's document_material.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function parseArgs(argv) {
  const args = {
    tjs: '/tmp/tjs',
    model: process.env.JETSERVE_SHARED_MODEL ?? path.resolve(repoRoot, '..', 'shared', 'model'),
    corpus: path.join(repoRoot, 'tests', 'tokenizer', 'corpus.json'),
    out: path.join(repoRoot, 'tests', 'tokenizer', 'corpus_cases.jsonl'),
  };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args) || i + 1 >= argv.length) {
      throw new Error(`usage: make_tokenizer_cases.mjs [--tjs DIR] [--model DIR] [--corpus FILE] [--out FILE]`);
    }
    args[key] = argv[i + 1];
  }
  return args;
}

async function loadTransformers(dir) {
  // Resolve the package from the directory it was installed into, not from this repository.
  const require = createRequire(path.join(path.resolve(dir), 'package.json'));
  const mod = await import(pathToFileURL(require.resolve('@huggingface/transformers')).href);
  return mod.env ? mod : mod.default;  // the CommonJS build exposes everything on `default`
}

// mulberry32: a tiny deterministic PRNG, so the documents are the same on every run.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const utf8Bytes = (s) => Buffer.byteLength(s, 'utf8');

function makeDocument(material, kind, seed, targetBytes) {
  const rand = prng(seed);
  const pick = (list) => list[Math.floor(rand() * list.length)];
  const parts = [];
  let size = 0;
  const add = (s) => {
    parts.push(s);
    size += utf8Bytes(s);
  };
  let section = 1;
  if (kind === 'chat') {
    add('<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n');
    while (size < targetBytes) {
      const user = [pick(material.prose), pick(material.multilingual)].join(' ');
      add(`<|im_start|>user\n${user}<|im_end|>\n`);
      const reply = [pick(material.prose), pick(material.code), pick(material.prose)].join('\n\n');
      add(`<|im_start|>assistant\n${reply}<|im_end|>\n`);
      if (rand() < 0.2) add('<|endoftext|>');
    }
    return parts.join('');
  }
  add(`# Document ${seed}: ${pick(material.headings)}\n\n`);
  while (size < targetBytes) {
    const r = rand();
    if (r < 0.12) {
      add(`\n## ${section++}. ${pick(material.headings)}\n\n`);
    } else if (kind === 'code' ? r < 0.6 : r < 0.25) {
      add(`${pick(material.code)}\n`);
    } else if (r < 0.35) {
      const n = 2 + Math.floor(rand() * 4);
      for (let i = 0; i < n; ++i) add(`${rand() < 0.5 ? '-' : `${i + 1}.`} ${pick(material.list_items)}\n`);
      add('\n');
    } else if (r < 0.4) {
      const rows = material.table_rows;
      add(`| ${rows[0].join(' | ')} |\n|${rows[0].map(() => '---').join('|')}|\n`);
      for (const row of rows.slice(1)) add(`| ${row.join(' | ')} |\n`);
      add('\n');
    } else if (kind === 'multilingual' ? r < 0.75 : r < 0.48) {
      add(`${pick(material.multilingual)}\n\n`);
    } else {
      // A paragraph: a few sentences, sometimes with trailing spaces or extra blank lines.
      const n = 1 + Math.floor(rand() * 4);
      const sentences = [];
      for (let i = 0; i < n; ++i) sentences.push(pick(material.prose));
      add(sentences.join(' ') + (rand() < 0.1 ? '   ' : '') + (rand() < 0.1 ? '\n\n\n\n' : '\n\n'));
    }
  }
  return parts.join('');
}

function tokenizerWithoutSpecials(tokenizerJson) {
  const copy = structuredClone(tokenizerJson);
  copy.added_tokens = copy.added_tokens.filter((t) => !t.special);
  return copy;
}

async function main() {
  const args = parseArgs(process.argv);
  const { PreTrainedTokenizer, env } = await loadTransformers(args.tjs);
  env.allowRemoteModels = false;  // everything comes from the local tokenizer.json

  const tokenizerJson = JSON.parse(fs.readFileSync(path.join(args.model, 'tokenizer.json'), 'utf8'));
  const config = JSON.parse(fs.readFileSync(path.join(args.model, 'tokenizer_config.json'), 'utf8'));
  const withSpecial = new PreTrainedTokenizer(tokenizerJson, config);
  const plain = new PreTrainedTokenizer(tokenizerWithoutSpecials(tokenizerJson),
                                        { ...config, additional_special_tokens: [] });

  const corpus = JSON.parse(fs.readFileSync(args.corpus, 'utf8'));
  const texts = [...corpus.texts];
  const documents = [
    ['markdown', 101, 12 * 1024],
    ['code', 202, 20 * 1024],
    ['multilingual', 303, 26 * 1024],
    ['prose', 404, 34 * 1024],
    ['chat', 505, 40 * 1024],
  ];
  for (const [kind, seed, size] of documents) {
    texts.push(makeDocument(corpus.document_material, kind, seed, size));
  }
  const specialPattern = /<\|[a-z_]+\|>/;

  const lines = [];
  const record = (tokenizer, text, allowSpecial) => {
    const ids = tokenizer.encode(text, { add_special_tokens: false });
    const decoded = tokenizer.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    const skipped = tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
    const rec = { text, allow_special: allowSpecial, ids, decoded };
    if (skipped !== decoded) rec.decoded_skip_special = skipped;
    lines.push(JSON.stringify(rec));
  };
  for (const text of texts) {
    record(withSpecial, text, true);
    if (specialPattern.test(text)) record(plain, text, false);
  }
  fs.writeFileSync(args.out, lines.join('\n') + '\n');
  console.log(`wrote ${lines.length} cases (${utf8Bytes(lines.join('\n'))} bytes) to ${args.out}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
