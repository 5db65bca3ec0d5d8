// Which swarm to join: named presets or a JSON file listing bootstrap multiaddrs (`--swarm`), and
// private-swarm keys (`--swarm-key`, libp2p's pre-shared key file format, as IPFS uses).

import { chmod, readFile, writeFile } from 'node:fs/promises'
import { generateKey } from '@libp2p/pnet'
import { OptionError } from '../util/errors.js'
import { multiaddr } from '@multiformats/multiaddr'

export interface SwarmPreset {
  /** multiaddrs of the swarm's bootstrap nodes (`bmrt-node --relay-only`), each with its /p2p/ id */
  initialPeers: string[]
}

/**
 * Swarms known by name. `public` is the swarm anyone may join; it lists no bootstrap nodes yet
 * because none run: when they do, their addresses go here, and `--swarm public` finds them.
 */
export const SWARM_PRESETS: Readonly<Record<string, SwarmPreset>> = {
  public: { initialPeers: [] }
}

/** The bootstrap peers of `nameOrFile`: a preset's name, or a JSON file `{ "initialPeers": [...] }`. */
export async function loadSwarm (nameOrFile: string): Promise<SwarmPreset> {
  const preset = SWARM_PRESETS[nameOrFile]
  if (preset !== undefined) {
    if (preset.initialPeers.length === 0) {
      throw new OptionError(['swarm', 'initialPeers'], name => `the ${nameOrFile} swarm has no bootstrap nodes yet: give ${name('initialPeers')}, or start a swarm with a relay-only node`)
    }
    return preset
  }
  let text: string
  try {
    text = await readFile(nameOrFile, 'utf8')
  } catch (err) {
    throw new OptionError(['swarm'], name => `${name('swarm')} ${nameOrFile}: not a known swarm (${Object.keys(SWARM_PRESETS).join(', ')}) and not a readable file (${(err as Error).message})`)
  }
  return parseSwarmFile(text, nameOrFile)
}

/** Checks a swarm file's JSON: an object whose initialPeers is a non-empty list of multiaddrs. */
export function parseSwarmFile (text: string, name: string): SwarmPreset {
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (err) {
    throw new Error(`${name} is not JSON: ${(err as Error).message}`)
  }
  const peers = (data as { initialPeers?: unknown } | null)?.initialPeers
  if (!Array.isArray(peers) || peers.length === 0 || !peers.every(p => typeof p === 'string')) {
    throw new Error(`${name} must hold { "initialPeers": ["/ip4/.../tcp/.../p2p/12D3KooW...", ...] } with at least one address`)
  }
  for (const peer of peers as string[]) {
    try {
      multiaddr(peer)
    } catch {
      throw new Error(`${name}: "${peer}" is not a multiaddr`)
    }
  }
  return { initialPeers: peers as string[] }
}

const KEY_HEADER = '/key/swarm/psk/1.0.0/\n/base16/\n'

/** Reads a private-swarm key file, refusing anything that is not one (with what it should be). */
export async function loadSwarmKey (path: string): Promise<Uint8Array> {
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (err) {
    throw new Error(`cannot read swarm key ${path}: ${(err as Error).message}`)
  }
  const lines = bytes.toString('utf8').split(/\r?\n/)
  if (lines[0] !== '/key/swarm/psk/1.0.0/' || lines[1] !== '/base16/' || !/^[0-9a-fA-F]{64}$/.test(lines[2] ?? '')) {
    throw new Error(`${path} is not a swarm key: expected the lines /key/swarm/psk/1.0.0/, /base16/ and 64 hex digits (make one with bmrt swarm new-key FILE)`)
  }
  return new TextEncoder().encode(`${KEY_HEADER}${lines[2]}`)
}

/** Writes a new random swarm key to `path` (mode 0600), never over an existing file. */
export async function createSwarmKey (path: string): Promise<void> {
  const key = new Uint8Array(KEY_HEADER.length + 64)
  generateKey(key)
  try {
    await writeFile(path, key, { mode: 0o600, flag: 'wx' })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${path} exists: a swarm key is never overwritten (its swarm would lose access)`)
    throw err
  }
  await chmod(path, 0o600) // the mode above is subject to the umask
}
