// `npm install` runs this: build the native addon with node-gyp. A failed build must not fail the
// install: bmrt then runs on its JS backend and says so once at start-up.
import { spawnSync } from 'node:child_process'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const addonDir = dirname(fileURLToPath(import.meta.url))
// npm puts its bundled node-gyp on PATH for install scripts and names it in npm_config_node_gyp.
const gyp = process.env.npm_config_node_gyp
const [command, args] = gyp ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']]
const result = spawnSync(command, args, { cwd: addonDir, stdio: 'inherit', shell: !gyp && process.platform === 'win32' })
if (result.status !== 0) {
  const why = result.error ? result.error.message : `node-gyp exited with ${result.status}`
  console.warn(`\nbmrt: the native addon did not build (${why}).\nbmrt still works on its JS backend, which is much slower. See README, "Native addon".\n`)
  if (process.env.BMRT_REQUIRE_NATIVE === '1') process.exit(1)
}
