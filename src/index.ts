// The bmrt library: `import { LocalModel, generate } from 'bmrt'`.

import './polyfill.js'

export { loadConfig, parseConfig, SUPPORTED_MODEL_TYPES, type ModelConfig, type RopeScaling } from './inference/config.js'
export { Checkpoint, tensorNames } from './inference/checkpoint.js'
export { SafetensorsFile, writeSafetensors, type TensorInfo } from './inference/safetensors.js'
export { parseDType, type DType } from './inference/dtype.js'
export { Tokenizer, type ChatMessage } from './inference/tokenizer.js'
export type { BackendName, BlockSpan, ModelHead } from './inference/backend.js'
export { LocalModel, type LanguageModel, type LanguageModelSession } from './inference/model.js'
export { loadBlockSpan, loadSpan, resolveBackend, type LoadOptions } from './inference/load-span.js'
export { loadAddon, NativeBlockSpan, WEIGHT_FORMATS, type WeightFormat } from './inference/native-backend.js'
export { Sampler, type SamplingOptions } from './inference/sampling.js'
export { generate, collect, type GenerateOptions, type GeneratedToken, type GenerationResult, type FinishReason } from './inference/generate.js'
export { makeTestModel, type TestModelSpec } from './inference/test-model.js'
