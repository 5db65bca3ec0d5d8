// The bundled model's reference greedy outputs: src/testing/expected.ts (bench/ checks against them too).
export { EXPECTED } from '../src/testing/expected.js'
