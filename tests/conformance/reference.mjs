// Runs transformers.js (the reference implementation) on a Florence-2 model directory over the
// conformance fixtures, greedy, and writes token ids and text per image and task as JSON.
//
//   node reference.mjs MODEL_DIR FIXTURE_DIR OUT.json [MAX_NEW_TOKENS]
import fs from 'node:fs';
import path from 'node:path';
import { env, AutoProcessor, Florence2ForConditionalGeneration, RawImage } from '@huggingface/transformers';

const [modelDir, fixtureDir, outFile, maxNewTokensArg] = process.argv.slice(2);
if (!modelDir || !fixtureDir || !outFile) {
  console.error('usage: node reference.mjs MODEL_DIR FIXTURE_DIR OUT.json [MAX_NEW_TOKENS]');
  process.exit(2);
}
const maxNewTokens = Number(maxNewTokensArg ?? 64);

// Offline: load only from the local folder.
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(path.resolve(modelDir)) + path.sep;
const modelId = path.basename(path.resolve(modelDir));

const model = await Florence2ForConditionalGeneration.from_pretrained(modelId, { dtype: 'fp32', device: 'cpu' });
const processor = await AutoProcessor.from_pretrained(modelId);

const tasks = ['<CAPTION>', '<DETAILED_CAPTION>', '<MORE_DETAILED_CAPTION>'];
const files = fs.readdirSync(fixtureDir).filter((f) => f.endsWith('.png')).sort();
const results = [];
for (const file of files) {
  const image = await RawImage.read(path.join(fixtureDir, file));
  if (image.width !== 768 || image.height !== 768) {
    throw new Error(`${file} is ${image.width}x${image.height}: fixtures must be 768x768 so no resize takes part`);
  }
  for (const task of tasks) {
    const prompts = processor.construct_prompts(task);
    const inputs = await processor(image, prompts);
    const ids = await model.generate({ ...inputs, max_new_tokens: maxNewTokens, num_beams: 1, do_sample: false });
    const tokenIds = Array.from(ids.tolist()[0], (v) => Number(v));
    const raw = processor.batch_decode(ids, { skip_special_tokens: false })[0];
    const text = processor.post_process_generation(raw, task, image.size)[task];
    results.push({
      file,
      task,
      prompt_ids: Array.from(inputs.input_ids.tolist()[0], (v) => Number(v)),
      token_ids: tokenIds,
      text: text.trim(),
    });
  }
}
fs.writeFileSync(outFile, JSON.stringify({ engine: 'transformers.js 4.3.1', max_new_tokens: maxNewTokens, results }, null, 1) + '\n');
console.error(`transformers.js: ${results.length} generations written to ${outFile}`);
