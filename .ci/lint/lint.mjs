// `npm run lint [-- paths]`: installs this folder's toolchain from its lockfile when it is missing or
// older than the lockfile, then runs ESLint over the repository (or the paths given) with
// eslint.config.js. The toolchain is a package of its own: typescript-eslint needs a TypeScript 5,
// the project builds with TypeScript 7 (PATCHES.md, "Lint").
import { spawnSync } from 'node:child_process'
import { statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const HERE = fileURLToPath(new URL('.', import.meta.url))
const ROOT = fileURLToPath(new URL('../..', import.meta.url))

function mtime (path) {
  try { return statSync(path).mtimeMs } catch { return -1 }
}

function run (command, args, options) {
  const result = spawnSync(command, args, { stdio: 'inherit', ...options })
  if (result.error !== undefined) throw result.error
  return result.status ?? 1
}

// npm ci writes node_modules/.package-lock.json after a complete install.
if (mtime(`${HERE}node_modules/.package-lock.json`) < mtime(`${HERE}package-lock.json`)) {
  const status = run('npm', ['ci', '--prefix', HERE, '--no-audit', '--no-fund', '--loglevel=error'],
    { shell: process.platform === 'win32' })
  if (status !== 0) process.exit(status)
}

const paths = process.argv.slice(2)
process.exit(run(process.execPath, [
  `${HERE}node_modules/eslint/bin/eslint.js`,
  '--config', `${HERE}eslint.config.js`,
  ...(paths.length > 0 ? paths : ['.']),
], { cwd: ROOT }))
