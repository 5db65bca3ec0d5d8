// The lint of `npm run lint`: the import direction between the layers, and a few correctness rules.
// The layer table is docs/architecture.md's; each zone's message names what its layer may import.
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'eslint/config'
import tseslint from 'typescript-eslint'
import { createNodeResolver, importX } from 'eslint-plugin-import-x'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/** Each layer (a folder under src/) and the layers it may import, besides itself. */
const LAYERS = [
  ['src/util', []],
  ['src/inference', ['src/util']],
  ['src/p2p', ['src/util']],
  ['src/petals/protocol', ['src/p2p', 'src/inference', 'src/util']],
  ['src/petals/planning', ['src/petals/protocol', 'src/inference', 'src/util']],
  ['src/petals/client', ['src/petals/protocol', 'src/petals/planning', 'src/p2p', 'src/inference', 'src/util']],
  ['src/petals/server', ['src/petals/protocol', 'src/petals/planning', 'src/p2p', 'src/inference', 'src/util']],
  ['src/api', ['src/petals/client', 'src/petals/protocol', 'src/petals/planning', 'src/p2p', 'src/inference', 'src/util']],
]

const layerZones = LAYERS.map(([layer, allowed]) => ({
  target: `./${layer}`,
  from: './src',
  // `except` is relative to `from`.
  except: [layer, ...allowed].map(path => `./${path.slice('src/'.length)}`),
  message: `${layer} may import ${allowed.length > 0 ? `only ${allowed.join(', ')}` : 'nothing else in src'} (layers: docs/architecture.md)`,
}))

const zones = [
  ...layerZones,
  // src/cli, src/testing and src/index.ts may import anything in src, and nothing outside it.
  { target: './src', from: ['./bench', './test', './docs'], message: 'src imports nothing from bench/, test/ or docs/ (layers: docs/architecture.md)' },
  { target: './bench', from: './test', message: 'bench/ may import anything in src, never test/ (layers: docs/architecture.md)' },
  { target: './test', from: './bench', message: 'test/ may import anything in src, never bench/ (layers: docs/architecture.md)' },
]

export default defineConfig(
  { ignores: ['dist/**', 'node_modules/**', '.ci/**', 'addon/**', 'web/**', 'python/**', 'bin/**', 'models/**'] },
  {
    files: ['src/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts', 'docs/**/*.ts'],
    languageOptions: { parser: tseslint.parser },
    plugins: { 'import-x': importX },
    settings: {
      // The sources import each other as `./x.js`, which is `./x.ts` until tsc has run.
      'import-x/resolver-next': [createNodeResolver({ extensionAlias: { '.js': ['.ts', '.js'] } })],
    },
    rules: {
      'import-x/no-restricted-paths': ['error', { basePath: ROOT, zones }],
      // An import the resolver cannot find would pass the zones unchecked.
      'import-x/no-unresolved': 'error',
      // No import cycle, between layers or between files.
      'import-x/no-self-import': 'error',
      'import-x/no-cycle': 'error',
      // A few of ESLint's own checks for plain mistakes that tsc lets through.
      'no-debugger': 'error',
      'no-dupe-keys': 'error',
      'no-duplicate-case': 'error',
      'no-self-assign': 'error',
      'no-unsafe-finally': 'error',
      'no-fallthrough': 'error',
      'no-new': 'error',
    },
  },
)
