// `npm run test:addon`: builds the C++ unit tests with CMake (into build/addon-tests) and runs them.
// Without CMake the tests are skipped with a message, unless BMRT_REQUIRE_NATIVE=1 (CI).
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../../', import.meta.url))
const buildDir = join(root, 'build', 'addon-tests')
const run = (command, args) => spawnSync(command, args, { cwd: root, stdio: 'inherit' })

if (spawnSync('cmake', ['--version'], { stdio: 'ignore' }).status !== 0) {
  const message = 'C++ addon tests skipped: cmake is not installed'
  if (process.env.BMRT_REQUIRE_NATIVE === '1') { console.error(message); process.exit(1) }
  console.log(message)
  process.exit(0)
}
const steps = [
  ['cmake', ['-S', 'addon', '-B', buildDir, '-DCMAKE_BUILD_TYPE=Release']],
  ['cmake', ['--build', buildDir, '--parallel', '2', '--target', 'kernels_test', 'span_test']]
]
for (const [command, args] of steps) {
  if (run(command, args).status !== 0) process.exit(1)
}
let failed = false
for (const test of ['kernels_test', 'span_test']) {
  const exe = [join(buildDir, test), join(buildDir, 'Release', `${test}.exe`)].find(existsSync)
  if (exe === undefined || run(exe, []).status !== 0) failed = true
}
process.exit(failed ? 1 : 0)
