// `npm install` runs this: build the native addon with node-gyp. A failed build must not fail the
// install: bmrt then runs on its JS backend and says so once at start-up.
//
// Where nvcc is found (PATH, $CUDA_HOME/bin or /usr/local/cuda/bin) and CMake finds cuBLAS (the
// CUDA toolkit's, or $BMRT_CUBLAS_DIR), the CUDA span is built first with CMake into build-cuda/
// and linked into the addon, which then offers CudaBlockSpan. BMRT_CUDA=0 skips that; BMRT_CUDA=1
// makes a failure to build it an error instead of a note.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const addonDir = dirname(fileURLToPath(import.meta.url))
const cudaMode = process.env.BMRT_CUDA ?? 'auto'

/** The link line for the CUDA span, or null when there is no CUDA build here. */
function buildCuda () {
  if (cudaMode === '0') return null
  const nvcc = ['nvcc', join(process.env.CUDA_HOME ?? '/usr/local/cuda', 'bin', 'nvcc')]
    .find(candidate => spawnSync(candidate, ['--version'], { stdio: 'ignore' }).status === 0)
  if (nvcc === undefined) return giveUp('nvcc not found')
  if (spawnSync('cmake', ['--version'], { stdio: 'ignore' }).status !== 0) return giveUp('nvcc found, but cmake (needed to build the CUDA span) is not installed')
  const buildDir = join(addonDir, 'build-cuda')
  const options = [
    ...(nvcc === 'nvcc' ? [] : [`-DCMAKE_CUDA_COMPILER=${nvcc}`]),
    `-DBMRT_CUBLAS_DIR=${process.env.BMRT_CUBLAS_DIR ?? ''}`
  ]
  const configure = spawnSync('cmake', ['-S', addonDir, '-B', buildDir, '-DCMAKE_BUILD_TYPE=Release', ...options], { stdio: ['ignore', 'ignore', 'inherit'] })
  if (configure.status !== 0) return giveUp('cmake could not configure the CUDA build')
  const linkFile = join(buildDir, 'cuda-link.txt')
  if (!existsSync(linkFile)) return giveUp('cuBLAS not found (install the CUDA toolkit, or set BMRT_CUBLAS_DIR)')
  console.log('bmrt: building the CUDA span (this takes a few minutes)...')
  const build = spawnSync('cmake', ['--build', buildDir, '--parallel', '--target', 'bmrt_cuda'], { stdio: 'inherit' })
  if (build.status !== 0) return giveUp('the CUDA span did not compile')
  return readFileSync(linkFile, 'utf8').trim()
}

function giveUp (why) {
  if (cudaMode === '1') {
    console.error(`bmrt: BMRT_CUDA=1 but ${why}`)
    process.exit(1)
  }
  if (cudaMode === 'auto' && !why.startsWith('nvcc not found')) console.warn(`bmrt: building without CUDA: ${why}`)
  return null
}

const cudaLink = buildCuda()
// npm puts its bundled node-gyp on PATH for install scripts and names it in npm_config_node_gyp.
const gyp = process.env.npm_config_node_gyp
const [command, args] = gyp ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']]
const env = { ...process.env, BMRT_CUDA_LINK: cudaLink ?? '' }
const result = spawnSync(command, args, { cwd: addonDir, stdio: 'inherit', env, shell: !gyp && process.platform === 'win32' })
if (result.status !== 0) {
  const why = result.error ? result.error.message : `node-gyp exited with ${result.status}`
  console.warn(`\nbmrt: the native addon did not build (${why}).\nbmrt still works on its JS backend, which is much slower. See docs/user-guide.md, "Native addon".\n`)
  if (process.env.BMRT_REQUIRE_NATIVE === '1') process.exit(1)
} else if (cudaLink !== null) {
  console.log('bmrt: the native addon is built with CUDA (--device cuda)')
}
