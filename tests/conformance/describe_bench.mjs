// The transformers.js side of `cargo bench --bench describe`: the same job as `altimage describe`
// (read each file, preprocess, generate greedily, decode) over the same files, model load
// excluded. Prints one JSON line: {"images", "seconds", "generated_tokens"}.
//
//   node describe_bench.mjs MODEL_DIR IMAGE_DIR MAX_NEW_TOKENS [TASK]
import fs from 'node:fs';
import path from 'node:path';
import { env, AutoProcessor, Florence2ForConditionalGeneration, RawImage } from '@huggingface/transformers';

const [modelDir, imageDir, maxNewTokensArg, taskArg] = process.argv.slice(2);
const maxNewTokens = Number(maxNewTokensArg);
const task = taskArg ?? '<CAPTION>';
env.allowRemoteModels = false;
env.localModelPath = path.dirname(path.resolve(modelDir)) + path.sep;
const modelId = path.basename(path.resolve(modelDir));
const model = await Florence2ForConditionalGeneration.from_pretrained(modelId, { dtype: 'fp32', device: 'cpu' });
const processor = await AutoProcessor.from_pretrained(modelId);

const files = fs.readdirSync(imageDir).filter((f) => /\.(png|jpe?g)$/i.test(f)).sort();
const prompts = processor.construct_prompts(task);
let generatedTokens = 0;
const started = process.hrtime.bigint();
for (const file of files) {
  const image = await RawImage.read(path.join(imageDir, file));
  const inputs = await processor(image, prompts);
  const ids = await model.generate({ ...inputs, max_new_tokens: maxNewTokens, num_beams: 1, do_sample: false });
  const raw = processor.batch_decode(ids, { skip_special_tokens: false })[0];
  processor.post_process_generation(raw, task, image.size);
  generatedTokens += ids.dims[1] - 1;
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
console.log(JSON.stringify({ images: files.length, seconds, generated_tokens: generatedTokens }));
