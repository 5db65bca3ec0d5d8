// `npm run check:proto`: regenerates the code of each .proto file with protons (as `npm run proto`
// does) in a temporary folder and compares it with the committed .ts beside the .proto. Prints the
// difference and exits 1 when one was edited without the other.
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const PROTOS = ['src/petals/protocol/messages.proto', 'src/p2p/reachability-messages.proto', 'src/p2p/registry-messages.proto']
const PROTONS = join(ROOT, 'node_modules', 'protons', 'dist', 'bin', 'protons.js')

const work = mkdtempSync(join(tmpdir(), 'bmrt-proto-'))
let differ = 0
try {
  for (const proto of PROTOS) {
    const copy = join(work, basename(proto))
    copyFileSync(join(ROOT, proto), copy)
    const generate = spawnSync(process.execPath, [PROTONS, copy], { stdio: 'inherit' })
    if (generate.status !== 0) throw new Error(`protons failed on ${proto}`)
    const committed = proto.replace(/\.proto$/, '.ts')
    const generated = copy.replace(/\.proto$/, '.ts')
    if (readFileSync(join(ROOT, committed), 'utf8') === readFileSync(generated, 'utf8')) continue
    differ++
    console.error(`${committed} differs from the code protons generates from ${proto} (npm run proto):`)
    spawnSync('git', ['diff', '--no-index', '--no-color', '--', join(ROOT, committed), generated], { stdio: 'inherit' })
  }
} finally {
  rmSync(work, { recursive: true, force: true })
}
if (differ > 0) {
  console.error(`${differ} of ${PROTOS.length} .proto files differ from their generated code`)
  process.exit(1)
}
console.log(`${PROTOS.length} .proto files match their generated code`)
