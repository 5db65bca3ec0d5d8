// Model directories: config validation, safetensors reading (single and sharded), reading only a
// span's tensors, and the errors people see for broken inputs.

import assert from 'node:assert/strict'
import { copyFile, readFile, truncate, writeFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { Checkpoint } from '../src/inference/checkpoint.js'
import { loadConfig, parseConfig } from '../src/inference/config.js'
import { loadJsSpan } from '../src/inference/js-backend.js'
import { LocalModel } from '../src/inference/model.js'
import { Tokenizer } from '../src/inference/tokenizer.js'
import { SafetensorsFile, writeSafetensors } from '../src/inference/safetensors.js'
import { floatToBf16, floatToHalf, fromFloat32, halfToFloat, toFloat32, type DType } from '../src/inference/dtype.js'
import { makeTestModel } from '../src/inference/test-model.js'
import { BUNDLED_MODEL, scratchDir } from './helpers.js'

describe('model loading', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => { ({ dir, cleanup } = await scratchDir()) })
  afterEach(async () => await cleanup())

  it('a span loader reads only its own blocks\' tensors from a sharded checkpoint', async () => {
    const config = await makeTestModel(dir, { layers: 6, hidden: 32, intermediate: 64, heads: 4, kvHeads: 2, vocab: 64, shards: 6, attentionBias: true })
    const checkpoint = await Checkpoint.open(dir)
    await loadJsSpan(checkpoint, config, 2, 4)
    const touched = checkpoint.tensorsRead
    assert.ok(touched.length > 0)
    assert.ok(touched.every(name => /^model\.layers\.[23]\./.test(name)), `read ${touched.join(', ')}`)
    assert.equal(touched.length, 2 * 13) // 9 weights + 4 biases per block

    // Every byte read is either a header of a file the span lives in or one of its tensors.
    let expected = 0
    for (const file of checkpoint.filesOpened()) {
      const header = (await readFile(join(dir, file))).readBigUInt64LE(0)
      expected += 8 + Number(header)
    }
    for (const name of touched) expected += (await checkpoint.info(name))!.byteLength
    assert.equal(await checkpoint.bytesRead(), expected)
    assert.ok(checkpoint.filesOpened().length < 6, `opened ${checkpoint.filesOpened().join(', ')}`)
    await checkpoint.close()
  })

  it('reads F32, F16 and BF16 checkpoints to the same model within each format\'s precision', async () => {
    const spec = { layers: 1, hidden: 16, intermediate: 32, heads: 2, vocab: 32, seed: 5 }
    const weights: Record<string, Float32Array> = {}
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      const sub = join(dir, dtype)
      const config = await makeTestModel(sub, { ...spec, dtype })
      const checkpoint = await Checkpoint.open(sub)
      weights[dtype] = await checkpoint.readFloat32('model.layers.0.self_attn.q_proj.weight', [config.hiddenSize, config.hiddenSize])
      await checkpoint.close()
    }
    const rel = (a: Float32Array, b: Float32Array): number => Math.max(...a.map((x, i) => Math.abs(x - b[i]) / Math.max(Math.abs(x), 1e-3)))
    assert.ok(rel(weights.f32, weights.f16) < 1e-3)
    assert.ok(rel(weights.f32, weights.bf16) < 8e-3)
    assert.ok(rel(weights.f32, weights.bf16) > 0, 'bf16 rounding should be visible')
  })

  it('refuses a directory without config.json, naming what it needs', async () => {
    await assert.rejects(LocalModel.load(dir), /no config\.json in .*point options\.modelDir at a Hugging Face model directory/)
  })

  it('refuses unknown architectures, naming the supported ones', async () => {
    await writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], vocab_size: 10 }))
    await assert.rejects(loadConfig(dir), /unsupported architecture model_type 'gpt2' \(GPT2LMHeadModel\); bmrt runs Llama-family models: llama, mistral/)
  })

  it('refuses configs with missing or inconsistent sizes', () => {
    const base = { model_type: 'llama', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 8, vocab_size: 100 }
    assert.throws(() => parseConfig({ ...base, hidden_size: undefined }), /'hidden_size' must be a positive integer/)
    assert.throws(() => parseConfig({ ...base, num_key_value_heads: 3 }), /multiple of num_key_value_heads/)
    assert.throws(() => parseConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } }), /rope_scaling type 'yarn' is not supported/)
    assert.throws(() => parseConfig({ ...base, hidden_act: 'gelu' }), /hidden_act 'gelu' is not supported/)
  })

  it('reads Llama 3 style configs: llama3 rope scaling, several EOS ids, explicit head_dim', () => {
    const config = parseConfig({
      model_type: 'llama', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 8,
      num_key_value_heads: 2, head_dim: 16, vocab_size: 100, eos_token_id: [7, 9], bos_token_id: 5, torch_dtype: 'bfloat16',
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }
    })
    assert.deepEqual(config.eosTokenIds, [7, 9])
    assert.equal(config.headDim, 16)
    assert.equal(config.dtype, 'bf16')
    assert.deepEqual(config.ropeScaling, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 })
  })

  it('names the file and tensor when a safetensors file is truncated', async () => {
    await makeTestModel(dir, { layers: 2, hidden: 16, intermediate: 32, heads: 2, vocab: 32, tokenizerFrom: BUNDLED_MODEL })
    const path = join(dir, 'model.safetensors')
    const file = await SafetensorsFile.open(path)
    const last = [...file.tensors.values()].sort((a, b) => b.offset - a.offset)[0]
    await file.close()
    await truncate(path, last.offset + 10)
    await assert.rejects(LocalModel.load(dir), new RegExp(`model\\.safetensors: tensor '${last.name.replace(/\./g, '\\.')}' needs bytes .* but the file has only ${last.offset + 10} \\(truncated download\\?\\)`))
  })

  it('names the file when the header is cut short or is not JSON', async () => {
    const path = join(dir, 'model.safetensors')
    await writeFile(path, Buffer.from([0xff, 0xff, 0, 0, 0, 0, 0, 0, 1, 2, 3]))
    await assert.rejects(SafetensorsFile.open(path), /model\.safetensors: header length 65535 does not fit in a 11-byte file/)
    const header = Buffer.from('{not json!')
    const length = Buffer.alloc(8)
    length.writeBigUInt64LE(BigInt(header.length))
    await writeFile(path, Buffer.concat([length, header]))
    await assert.rejects(SafetensorsFile.open(path), /model\.safetensors: the safetensors header is not valid JSON/)
  })

  it('refuses dtypes it cannot read, naming the tensor and the dtypes it reads', async () => {
    const path = join(dir, 'model.safetensors')
    await writeSafetensors(path, [{ name: 'model.embed_tokens.weight', dtype: 'I64' as DType, shape: [2], bytes: new Uint8Array(16) }])
    await assert.rejects(SafetensorsFile.open(path), /tensor 'model\.embed_tokens\.weight' has dtype "I64"; bmrt reads F32, F16 and BF16 checkpoints/)
  })

  it('names the tensor whose shape disagrees with config.json', async () => {
    await makeTestModel(dir, { layers: 1, hidden: 16, intermediate: 32, heads: 2, vocab: 32 })
    const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'))
    await writeFile(join(dir, 'config.json'), JSON.stringify({ ...config, intermediate_size: 48 }))
    const checkpoint = await Checkpoint.open(dir)
    await assert.rejects(loadJsSpan(checkpoint, await loadConfig(dir), 0, 1), /tensor 'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \[32, 16\], config\.json implies \[48, 16\]/)
    await checkpoint.close()
  })

  it('refuses a directory without weights or without a tokenizer', async () => {
    await copyFile(join(BUNDLED_MODEL, 'config.json'), join(dir, 'config.json'))
    await assert.rejects(Checkpoint.open(dir), /no model\.safetensors or model\.safetensors\.index\.json in/)
    await assert.rejects(Tokenizer.load(dir), /no tokenizer\.json in .*fast tokenizer file/)
    await makeTestModel(dir, { layers: 1, hidden: 16, intermediate: 32, heads: 2, vocab: 32, shards: 2 })
    await rm(join(dir, 'model-00002-of-00002.safetensors'))
    const checkpoint = await Checkpoint.open(dir)
    await assert.rejects(checkpoint.readRaw('lm_head.weight'), /cannot open .*model-00002-of-00002\.safetensors/)
    await checkpoint.close()
  })
})

describe('dtype conversion', () => {
  it('round-trips exactly representable values through f16 and bf16', () => {
    const values = Float32Array.from([0, -0, 1, -2.5, 0.15625, 65504, 2 ** -24, -(2 ** -14), Infinity, -Infinity])
    assert.deepEqual(toFloat32(fromFloat32(values, 'f16'), 'f16'), values)
    const bfValues = Float32Array.from([0, 1, -2.5, 2 ** 127, -(2 ** -130), Infinity])
    assert.deepEqual(toFloat32(fromFloat32(bfValues, 'bf16'), 'bf16'), bfValues)
  })

  it('rounds to nearest even, overflows to infinity, keeps NaN', () => {
    assert.equal(halfToFloat(floatToHalf(1 + 2 ** -11)), 1) // halfway: to even
    assert.equal(halfToFloat(floatToHalf(1 + 3 * 2 ** -11)), 1 + 2 ** -9)
    assert.equal(halfToFloat(floatToHalf(70000)), Infinity)
    assert.ok(Number.isNaN(halfToFloat(floatToHalf(NaN))))
    assert.equal(floatToBf16(1 + 2 ** -8), 0x3f80) // halfway: to even
    assert.equal(floatToBf16(1 + 3 * 2 ** -8), 0x3f82)
    assert.ok(Number.isNaN(toFloat32(Uint8Array.from([floatToBf16(NaN) & 0xff, floatToBf16(NaN) >> 8]), 'bf16')[0]))
  })
})
