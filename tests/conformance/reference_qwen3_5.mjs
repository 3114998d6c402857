// Runs transformers.js (the reference implementation) on a Qwen3.5 model directory over the
// Qwen3.5 parity requests, greedy, and writes per request the prompt text, the prompt ids the
// model consumed, a pixel_values summary, the generated ids and the decoded text as JSON.
//
//   node reference_qwen3_5.mjs MODEL_DIR REQUESTS.json PROMPTS.json OUT.json [MAX_NEW_TOKENS]
//
// The prompt is rendered here, in JavaScript, from src/model/qwen3_5/prompts.json by the rules of
// src/model/qwen3_5/PROMPTS.md (its own implementation of them: the Rust one and the Python
// reference are the others). It is also rendered through the model's chat template
// (apply_chat_template, enable_thinking false) and the two must agree.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { env, AutoProcessor, Qwen3_5ForConditionalGeneration, RawImage } from '@huggingface/transformers';

const [modelDir, requestsFile, promptsFile, outFile, maxNewTokensArg] = process.argv.slice(2);
if (!modelDir || !requestsFile || !promptsFile || !outFile) {
  console.error('usage: node reference_qwen3_5.mjs MODEL_DIR REQUESTS.json PROMPTS.json OUT.json [MAX_NEW_TOKENS]');
  process.exit(2);
}

// ---- PROMPTS.md, in JavaScript ---------------------------------------------------------------
// Whitespace is Unicode White_Space (Rust char::is_whitespace), spelled out because JavaScript's
// \s differs from it (U+FEFF in, U+0085 out); control characters are the Cc category.
const WS = '\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const WS_RUN = new RegExp(`[${WS}]+`, 'g');
const IS_WS = new RegExp(`^[${WS}]$`);
const SPECIAL_SPAN = /<\|[\s\S]*?\|>/g;
const PLACEHOLDER = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

// The tokenizer's added tokens (`<|im_end|>`, `<think>`, ...), longest first: set once the model
// directory is known.
let RESERVED = [];

function sanitise(value) {
  let s = String(value);
  for (;;) {
    let t = s.replace(SPECIAL_SPAN, '');
    for (const token of RESERVED) t = t.split(token).join('');
    if (t === s) break;
    s = t;
  }
  s = Array.from(s).filter((ch) => IS_WS.test(ch) || !/\p{Cc}/u.test(ch)).join('');
  return s.replace(WS_RUN, ' ').trim();
}

// One pass over the template's placeholders; null when one of them has no value.
function fill(template, values) {
  let missing = false;
  const out = template.replace(PLACEHOLDER, (_, name) => {
    const v = values[name];
    if (v === undefined || v === null) {
      missing = true;
      return '';
    }
    return String(v);
  });
  return missing ? null : out;
}

function userMessage(spec, req) {
  const out = spec.outputs[req.output];
  const values = { language: req.language, language_name: spec.languages[req.language] };
  for (const k of ['max_chars', 'max_words', 'count']) {
    if (req[k] !== undefined && req[k] !== null) values[k] = Math.trunc(req[k]);
  }
  const lines = [];
  const first = fill(out.instruction, values);
  if (first === null) throw new Error(`${req.id}: the instruction needs a value it was not given`);
  lines.push(first);
  for (const key of ['title', 'brand', 'category', 'attributes', 'keywords', 'tone']) {
    const raw = req[key];
    if (raw === undefined || raw === null) continue;
    let text;
    if (key === 'attributes') {
      text = raw
        .map(([k, v]) => [sanitise(k), sanitise(v)])
        .filter(([k, v]) => k && v)
        .map(([k, v]) => `${k}: ${v}`)
        .join('; ');
    } else if (key === 'keywords') {
      text = raw.map(sanitise).filter((x) => x).join(', ');
    } else {
      text = sanitise(raw);
    }
    if (text) lines.push(fill(spec.context[key], { value: text }));
  }
  if (out.length !== undefined) {
    const line = fill(out.length, values);
    if (line !== null) lines.push(line);
  }
  lines.push(fill(spec.closing, { answer: out.answer }));
  return lines.join('\n');
}

function renderPrompt(spec, req) {
  return (
    `<|im_start|>system\n${spec.system.trim()}<|im_end|>\n` +
    `<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>${userMessage(spec, req)}<|im_end|>\n` +
    '<|im_start|>assistant\n<think>\n\n</think>\n\n'
  );
}

// ---- the run -----------------------------------------------------------------------------------
const maxNewTokens = Number(maxNewTokensArg ?? 64);
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(path.resolve(modelDir)) + path.sep;
const modelId = path.basename(path.resolve(modelDir));

const spec = JSON.parse(fs.readFileSync(promptsFile, 'utf8'));
RESERVED = JSON.parse(fs.readFileSync(path.join(modelDir, 'tokenizer.json'), 'utf8'))
  .added_tokens.map((t) => t.content)
  .filter((c) => c)
  .sort((a, b) => b.length - a.length || (a < b ? -1 : a > b ? 1 : 0));
const requests = JSON.parse(fs.readFileSync(requestsFile, 'utf8')).requests;
const requestsDir = path.dirname(path.resolve(requestsFile));

const started = Date.now();
const model = await Qwen3_5ForConditionalGeneration.from_pretrained(modelId, { dtype: 'fp32', device: 'cpu' });
const processor = await AutoProcessor.from_pretrained(modelId);
const loaded = Date.now();

const sha256 = (typed) => crypto.createHash('sha256').update(Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength)).digest('hex');
const eos = [model.generation_config.eos_token_id].flat().map(Number);

const results = [];
for (const req of requests) {
  const image = await RawImage.read(path.join(requestsDir, req.image));
  const prompt = renderPrompt(spec, req);
  const viaTemplate = processor.apply_chat_template(
    [
      { role: 'system', content: spec.system },
      { role: 'user', content: [{ type: 'image' }, { type: 'text', text: userMessage(spec, req) }] },
    ],
    { add_generation_prompt: true, enable_thinking: false, tokenize: false },
  );
  const inputs = await processor(prompt, image);
  const promptIds = Array.from(inputs.input_ids.data, Number);
  const output = await model.generate({ ...inputs, max_new_tokens: maxNewTokens, do_sample: false });
  const all = Array.from(output.data, Number);
  const generated = all.slice(promptIds.length);
  const px = inputs.pixel_values;
  results.push({
    id: req.id,
    image: req.image,
    image_size: [image.width, image.height],
    prompt,
    chat_template_equal: viaTemplate === prompt,
    prompt_ids: promptIds,
    grid: Array.from(inputs.image_grid_thw.data, Number),
    pixel_values: { shape: px.dims, sha256: sha256(px.data), first: Array.from(px.data.slice(0, 8)) },
    generated_ids: generated,
    ended_with_eos: eos.includes(generated.at(-1)),
    text: processor.batch_decode([generated], { skip_special_tokens: true })[0],
  });
}
const done = Date.now();
fs.writeFileSync(
  outFile,
  JSON.stringify(
    {
      engine: 'transformers.js 4.3.1',
      max_new_tokens: maxNewTokens,
      eos_token_id: eos,
      note: 'generated_ids are the ids after the prompt as generate() returns them: the EOS token is kept when generation stopped on it',
      seconds: { load: (loaded - started) / 1000, generate: (done - loaded) / 1000 },
      results,
    },
    null,
    1,
  ) + '\n',
);
console.error(`transformers.js: ${results.length} Qwen3.5 generations written to ${outFile} (${(done - started) / 1000} s)`);
