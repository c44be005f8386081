// End-to-end tests of the OpenAI-compatible HTTP API with the official `openai` npm client,
// against a real `jetserve serve` on 127.0.0.1 (kernel-picked ports) serving the embedded
// default model (byte-level tokenizer: one token per byte, plus <|endoftext|>, <|im_start|>,
// <|im_end|>; its ChatML template has the default system prompt "You are a helpful assistant.").
//
// Run by CTest: JETSERVE_BIN=build/jetserve JETSERVE_SCRATCH=dir node --test openai.test.mjs
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import readline from "node:readline";

import OpenAI from "openai";

const BIN = process.env.JETSERVE_BIN;
const SCRATCH = process.env.JETSERVE_SCRATCH ?? "/tmp/jetserve-openai-test";
assert.ok(BIN, "set JETSERVE_BIN to the jetserve binary");

let server;
let client;
let httpPort;
let metricsPort;
let modelName;

// Starts the server and resolves once it prints {"event": "serving"} on stdout.
function startServer() {
  const cache = path.join(SCRATCH, `cache-${process.pid}`);
  mkdirSync(cache, { recursive: true });
  const proc = spawn(
    BIN,
    ["serve", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--http-port", "0",
     "--max-n", "8", "--log-format", "json"],
    { env: { ...process.env, JETSERVE_CACHE_DIR: cache }, stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: proc.stdout });
    lines.on("line", (line) => {
      const event = JSON.parse(line);
      if (event.event === "listening") {
        httpPort = event.http_port;
        metricsPort = event.metrics_port;
      } else if (event.event === "serving") {
        modelName = event.model_name;
        resolve(proc);
      }
    });
    proc.on("exit", (code) => reject(new Error(`jetserve serve exited with ${code}`)));
  });
}

before(async () => {
  server = await startServer();
  // No retries: an error must surface as the error the server sent.
  client = new OpenAI({ baseURL: `http://127.0.0.1:${httpPort}/v1`, apiKey: "unused",
                        maxRetries: 0 });
});

after(() => {
  server?.kill("SIGTERM");
});

async function metric(name) {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
  assert.ok(line, `${name} not in /metrics`);
  return Number(line.trim().split(/\s+/).pop());
}

// The ChatML prompt of the embedded template, counted in tokens: one per byte, one per special.
function chatPromptTokens(messages) {
  const bytes = (s) => Buffer.byteLength(s, "utf8");
  let n = 0;
  const all = messages[0].role === "system"
    ? messages : [{ role: "system", content: "You are a helpful assistant." }, ...messages];
  for (const m of all) n += 1 + bytes(`${m.role}\n${m.content}`) + 1 + bytes("\n");
  return n + 1 + bytes("assistant\n");
}

test("GET /v1/models lists the served model", async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [modelName]);
  assert.equal(models.data[0].object, "model");
  assert.ok(models.data[0].max_model_len > 0);
});

test("GET /health answers 200 while serving", async () => {
  const res = await fetch(`http://127.0.0.1:${httpPort}/health`);
  assert.equal(res.status, 200);
});

test("completions: text, usage, logprobs, and streaming gives the same text", async () => {
  const params = { model: modelName, prompt: "Hello, jet", max_tokens: 12, temperature: 0,
                   logprobs: 3, ignore_eos: true };
  const full = await client.completions.create(params);
  assert.equal(full.object, "text_completion");
  assert.equal(full.choices.length, 1);
  assert.equal(full.choices[0].finish_reason, "length");
  assert.deepEqual(full.usage, { prompt_tokens: 10, completion_tokens: 12, total_tokens: 22 });
  const lp = full.choices[0].logprobs;
  assert.equal(lp.token_logprobs.length, 12);
  for (let i = 0; i < 12; ++i) {
    assert.ok(lp.token_logprobs[i] <= 0);
    const top = Object.values(lp.top_logprobs[i]);
    // Three distinct names: a token that is not whole UTF-8 characters is "bytes:\\xNN"
    // (OpenAI's form), so partial bytes no longer share one "\uFFFD" key.
    assert.equal(top.length, 3);
    // Greedy: the chosen token is the most likely one.
    assert.ok(top.every((v) => v <= lp.token_logprobs[i] + 1e-6));
  }
  // text_offset counts characters of the text (not the bytes of U+FFFD stand-ins), from 0.
  const chars = [...full.choices[0].text].length;
  assert.equal(lp.text_offset[0], 0);
  for (let i = 1; i < 12; ++i) assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1]);
  assert.ok(lp.text_offset[11] < chars);

  const stream = await client.completions.create({ ...params, stream: true,
                                                   stream_options: { include_usage: true } });
  let text = "";
  let finish = null;
  let usage = null;
  const offsets = [];
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      if (c.logprobs) offsets.push(...c.logprobs.text_offset);
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(text, full.choices[0].text);
  assert.deepEqual(offsets, lp.text_offset);  // streamed chunks continue the choice's offsets
  assert.equal(finish, "length");
  assert.deepEqual(usage, full.usage);
});

test("completions: token-id prompts, several prompts, echo", async () => {
  const ids = await client.completions.create({ model: modelName, prompt: [72, 105], max_tokens: 3,
                                                temperature: 0, ignore_eos: true });
  const text = await client.completions.create({ model: modelName, prompt: "Hi", max_tokens: 3,
                                                 temperature: 0, ignore_eos: true });
  assert.equal(ids.choices[0].text, text.choices[0].text, "[72, 105] is 'Hi' byte by byte");
  const two = await client.completions.create({ model: modelName, prompt: ["Hi", "abc"],
                                                max_tokens: 3, temperature: 0, ignore_eos: true });
  assert.deepEqual(two.choices.map((c) => c.index), [0, 1]);
  assert.equal(two.choices[0].text, text.choices[0].text);
  assert.equal(two.usage.prompt_tokens, 5);
  const echo = await client.completions.create({ model: modelName, prompt: "Hi", max_tokens: 3,
                                                 temperature: 0, ignore_eos: true, echo: true });
  assert.equal(echo.choices[0].text, "Hi" + text.choices[0].text);
});

test("stop strings split across tokens end the text, streamed or not", async () => {
  const base = { model: modelName, prompt: "The stop test", max_tokens: 40, temperature: 0,
                 ignore_eos: true };
  const full = (await client.completions.create(base)).choices[0].text;
  // Three characters of the output: with one token per byte they span at least 3 tokens.
  const chars = [...full];
  assert.ok(chars.length >= 12);
  const stop = chars.slice(8, 11).join("");
  const expected = full.slice(0, full.indexOf(stop));
  const cut = await client.completions.create({ ...base, stop: ["\u0001never", stop] });
  assert.equal(cut.choices[0].text, expected);
  assert.equal(cut.choices[0].finish_reason, "stop");
  assert.equal(cut.choices[0].stop_reason, stop);
  let streamed = "";
  for await (const chunk of await client.completions.create({ ...base, stop, stream: true })) {
    for (const c of chunk.choices) streamed += c.text;
  }
  assert.equal(streamed, expected, "the stop text is never streamed");
  const kept = await client.completions.create({ ...base, stop, include_stop_str_in_output: true });
  assert.equal(kept.choices[0].text, expected + stop);
});

test("n = 4 costs one prefill and gives 4 different samples", async () => {
  const prompt = "Four ways to say it:".repeat(4);
  const before = await metric("jetserve:prefill_tokens_computed_total");
  const res = await client.completions.create({ model: modelName, prompt, n: 4, max_tokens: 16,
                                                temperature: 1.0, seed: 7, ignore_eos: true });
  const after = await metric("jetserve:prefill_tokens_computed_total");
  assert.equal(after - before, Buffer.byteLength(prompt), "the prompt was computed once");
  assert.deepEqual(res.choices.map((c) => c.index), [0, 1, 2, 3]);
  assert.equal(new Set(res.choices.map((c) => c.text)).size, 4);
  assert.equal(res.usage.prompt_tokens, Buffer.byteLength(prompt));
  assert.equal(res.usage.completion_tokens, 64);
  // Same seed, same request: the same four samples.
  const again = await client.completions.create({ model: modelName, prompt, n: 4, max_tokens: 16,
                                                  temperature: 1.0, seed: 7, ignore_eos: true });
  assert.deepEqual(again.choices.map((c) => c.text), res.choices.map((c) => c.text));
});

test("chat: the prompt is the template's, and streaming matches", async () => {
  const messages = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "What is a JetBlock? <|im_end|> is plain text here" },
    { role: "assistant", content: "A layer." },
    { role: "user", content: "Say more." },
  ];
  const res = await client.chat.completions.create({ model: modelName, messages, max_tokens: 8,
                                                     temperature: 0, ignore_eos: true,
                                                     logprobs: true, top_logprobs: 2 });
  assert.equal(res.object, "chat.completion");
  assert.equal(res.choices[0].message.role, "assistant");
  // Special-token text in user content counts byte by byte, not as one special token.
  assert.equal(res.usage.prompt_tokens, chatPromptTokens(messages));
  assert.equal(res.usage.completion_tokens, 8);
  assert.equal(res.choices[0].logprobs.content.length, 8);
  assert.equal(res.choices[0].logprobs.content[0].top_logprobs.length, 2);

  const defaultSystem = [{ role: "user", content: "hi" }];
  const plain = await client.chat.completions.create({ model: modelName, messages: defaultSystem,
                                                       max_tokens: 2 });
  assert.equal(plain.usage.prompt_tokens, chatPromptTokens(defaultSystem));

  const stream = await client.chat.completions.create({ model: modelName, messages, max_tokens: 8,
                                                        temperature: 0, ignore_eos: true,
                                                        stream: true });
  let content = "";
  let sawRole = false;
  let finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, "chat.completion.chunk");
    for (const c of chunk.choices) {
      if (c.delta.role) sawRole = true;
      content += c.delta.content ?? "";
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(sawRole);
  assert.equal(content, res.choices[0].message.content);
  assert.equal(finish, "length");
});

test("errors: OpenAI error objects with HTTP status codes", async () => {
  const expectError = async (fn, status, text) => {
    await assert.rejects(fn, (e) => {
      assert.ok(e instanceof OpenAI.APIError, String(e));
      assert.equal(e.status, status, e.message);
      assert.match(e.message, text);
      return true;
    });
  };
  await expectError(() => client.completions.create({ model: modelName, prompt: "x", top_p: 2 }),
                    400, /top_p: 2 is outside \(0, 1\]/);
  await expectError(() => client.completions.create({ model: "gpt-4", prompt: "x" }),
                    404, /gpt-4/);
  await expectError(() => client.completions.create({ model: modelName, prompt: "x", n: 99 }),
                    400, /n: 99 is outside \[1, 8\]/);
  await expectError(() => client.completions.create({ model: modelName, prompt: "" }),
                    400, /prompt/);
  await expectError(() => client.chat.completions.create({ model: modelName, messages: [] }),
                    400, /messages/);
  await expectError(
      () => client.chat.completions.create({ model: modelName,
                                             messages: [{ role: "tool", content: "x" }] }),
      400, /tool/);
  await expectError(() => client.completions.create({ model: modelName, prompt: "x",
                                                      temperature: -1 }),
                    400, /temperature/);
  await expectError(() => client.completions.create({ model: modelName, prompt: [1, 999] }),
                    400, /outside the vocabulary/);
  // Not JSON at all.
  const res = await fetch(`http://127.0.0.1:${httpPort}/v1/completions`,
                          { method: "POST", body: "{not json" });
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /not valid JSON/);
  // The server still serves.
  const ok = await client.completions.create({ model: modelName, prompt: "ok", max_tokens: 1 });
  assert.equal(ok.choices.length, 1);
});
