// The name a swarm knows a model by: the model folder's name, as in Petals, unless given. Servers
// of dummy weights (--load-format dummy) announce it with "-dummy" appended, and clients of dummy
// weights look for that name: random weights are never served to a client that loaded real ones,
// however the folders are named.

import { basename, resolve } from 'node:path'
import type { LoadFormat } from '../../inference/dummy-weights.js'

export function swarmModelName (modelDir: string, loadFormat: LoadFormat = 'safetensors'): string {
  const name = basename(resolve(modelDir))
  return loadFormat === 'dummy' ? `${name}-dummy` : name
}
