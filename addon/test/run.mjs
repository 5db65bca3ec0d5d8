// `npm run test:addon`: builds the C++ unit tests with CMake (into build/addon-tests) and runs them.
// Without CMake the tests are skipped with a message, unless BMRT_REQUIRE_NATIVE=1 (CI). Where nvcc
// is found, the CUDA kernels and their test are compiled too (for one architecture; without a GPU
// the compiled tests only say so, and the emulated ones below run them on the CPU).
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
// With cuBLAS too ($BMRT_CUBLAS_DIR, e.g. the nvidia-cublas wheel CI installs), the CUDA span, its
// test and its benchmark compile and link as well; and on Linux x86-64 the CUDA kernel and span
// tests also run on the CPU, in the emulator of test/cuda_emulator.h (a few minutes on 2 cores).
const cuda = spawnSync('nvcc', ['--version'], { stdio: 'ignore' }).status === 0
const cublas = cuda && (process.env.BMRT_CUBLAS_DIR ?? '') !== ''
const emulated = cublas && process.platform === 'linux' && process.arch === 'x64'
const tests = ['kernels_test', 'span_test', 'head_test', ...(cuda ? ['cuda_kernels_test'] : []), ...(cublas ? ['cuda_span_test'] : []),
  ...(emulated ? ['cuda_kernels_test_emulated', 'cuda_span_test_emulated'] : [])]
const cudaOptions = cuda ? ['-DCMAKE_CUDA_ARCHITECTURES=90', `-DBMRT_CUBLAS_DIR=${process.env.BMRT_CUBLAS_DIR ?? ''}`] : ['-DBMRT_NO_CUDA=ON']
const steps = [
  ['cmake', ['-S', 'addon', '-B', buildDir, '-DCMAKE_BUILD_TYPE=Release', ...cudaOptions]],
  ['cmake', ['--build', buildDir, '--parallel', '2', '--target', ...tests, ...(cublas ? ['cuda_bench'] : [])]]
]
for (const [command, args] of steps) {
  if (run(command, args).status !== 0) process.exit(1)
}
let failed = false
for (const test of tests) {
  const exe = [join(buildDir, test), join(buildDir, 'Release', `${test}.exe`)].find(existsSync)
  if (exe === undefined || run(exe, []).status !== 0) failed = true
}
process.exit(failed ? 1 : 0)
