// Shared by the bin/ entry points: the commands' code lives in dist/, built from src/ by `npm install`.
export function launch (command, modulePath) {
  import(modulePath).catch(err => {
    if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist')) {
      console.error(`${command}: dist/ is missing; run \`npm install\` (or \`npm run build\`) in the bmrt folder first`)
    } else {
      console.error(err)
    }
    process.exitCode = 1
  })
}
