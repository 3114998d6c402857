// The transformers.js side of `cargo bench --bench qwen`: the same jobs as ours (read the image,
// preprocess, generate greedily, decode the text) on the same files, model load excluded. The
// prompts come rendered from the bench (ours, from src/model/qwen3_5/prompts.json), so both sides
// feed the same text and the bench compares the prompt ids and the generated ids.
//
//   node qwen3_5_bench.mjs MODEL_DIR JOBS.json
//
// JOBS.json: {"max_new_tokens": N, "jobs": [{"image": PATH, "prompt": TEXT}, ...]}. Prints
// {"ready": true} once loaded, then one JSON line per `pass` line read on stdin:
// {"seconds", "stages", "results": [{"prompt_ids", "generated_ids"}]}; exits at the end of stdin.
// Passes on demand let the bench alternate them with its own. `stages` is the time inside each
// session's run (seconds): vision_encoder, embed_tokens, and the decoder split into prefill (the
// call that feeds the prompt) and decode (one token a call), with decode_steps.
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { env, AutoProcessor, Qwen3_5ForConditionalGeneration, RawImage } from '@huggingface/transformers';

const [modelDir, jobsFile] = process.argv.slice(2);
if (!modelDir || !jobsFile) {
  console.error('usage: node qwen3_5_bench.mjs MODEL_DIR JOBS.json');
  process.exit(2);
}
const { max_new_tokens: maxNewTokens, jobs } = JSON.parse(fs.readFileSync(jobsFile, 'utf8'));
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(path.resolve(modelDir)) + path.sep;
const modelId = path.basename(path.resolve(modelDir));
const model = await Qwen3_5ForConditionalGeneration.from_pretrained(modelId, { dtype: 'fp32', device: 'cpu' });
const processor = await AutoProcessor.from_pretrained(modelId);
console.log(JSON.stringify({ ready: true }));

// Time inside each session, as our StageTimings split it.
let stages;
for (const [name, session] of Object.entries(model.sessions)) {
  const run = session.run.bind(session);
  session.run = async (feed, ...rest) => {
    const started = process.hrtime.bigint();
    const output = await run(feed, ...rest);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (name === 'decoder_model_merged') {
      const prefill = feed.inputs_embeds.dims[1] > 1;
      stages[prefill ? 'prefill' : 'decode'] += seconds;
      if (!prefill) stages.decode_steps += 1;
    } else {
      stages[name] = (stages[name] ?? 0) + seconds;
    }
    return output;
  };
}

async function pass() {
  const results = [];
  stages = { vision_encoder: 0, embed_tokens: 0, prefill: 0, decode: 0, decode_steps: 0 };
  const started = process.hrtime.bigint();
  for (const job of jobs) {
    const image = await RawImage.read(job.image);
    const inputs = await processor(job.prompt, image);
    const output = await model.generate({ ...inputs, max_new_tokens: maxNewTokens, do_sample: false });
    const promptLength = inputs.input_ids.dims[1];
    const generated = Array.from(output.data, Number).slice(promptLength);
    processor.batch_decode([generated], { skip_special_tokens: true });
    results.push({ prompt_ids: Array.from(inputs.input_ids.data, Number), generated_ids: generated });
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { seconds, stages, results };
}

for await (const line of readline.createInterface({ input: process.stdin })) {
  if (line.trim() === 'pass') console.log(JSON.stringify(await pass()));
}
