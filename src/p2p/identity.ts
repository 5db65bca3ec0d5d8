// A node's persistent identity: an Ed25519 private key in a file of its own (permissions 0600),
// created on first run, so the peer id (and the addresses others saved) survive restarts; and the
// key of each running node, which signs its records; and the short form of a peer id that logs and
// reports show.

import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { generateKeyPair, generateKeyPairFromSeed, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import type { BmrtNode } from './node.js'

const keys = new WeakMap<BmrtNode, PrivateKey>()

/** Keeps a node's private key for privateKeyOf (createNode calls this; libp2p does not expose the key). */
export function rememberPrivateKey (node: BmrtNode, key: PrivateKey): void {
  keys.set(node, key)
}

/** The node's private key, for signing records. */
export function privateKeyOf (node: BmrtNode): PrivateKey {
  const key = keys.get(node)
  if (key === undefined) throw new Error('node was not made by createNode')
  return key
}

/** An identity file that cannot be read, is not a key, or holds a damaged key. */
export class IdentityError extends Error {
  constructor (readonly path: string, message: string) {
    super(message)
    this.name = 'IdentityError'
  }
}

/** An Ed25519 seed is the first 32 bytes of the 64 stored; the public key is the other 32. */
const ED25519_SEED_BYTES = 32

/**
 * Checks that the private half of a key makes its public half. An Ed25519 key file stores both
 * (seed, then public key), and libp2p takes the stored public half as it is: a file with a damaged
 * seed loads with the right peer id, but every record it signs is then refused by the swarm, and the
 * node fails later with a misleading error (DHT peers not found). Other key types store the private
 * key alone and derive the public one.
 */
async function checkKeyPair (path: string, privateKey: PrivateKey): Promise<void> {
  if (privateKey.type !== 'Ed25519') return
  const rebuilt = await generateKeyPairFromSeed('Ed25519', privateKey.raw.subarray(0, ED25519_SEED_BYTES))
  if (!rebuilt.publicKey.equals(privateKey.publicKey)) {
    throw new IdentityError(path, `${path} is damaged: its private key does not make its public key; restore it from a backup, or move it away to create a new identity (a new peer id)`)
  }
}

export interface LoadedIdentity {
  privateKey: PrivateKey
  /** true: the file did not exist and was created (mode 0600) */
  created: boolean
  /** the file's permission bits, where others than its owner may read or write it (mode & 0o077 != 0); null otherwise and on Windows */
  exposedMode: number | null
}

/** Reads the key at `path` and checks it, or creates it there; `created` says which. */
export async function loadOrCreateIdentity (path: string): Promise<LoadedIdentity> {
  let bytes: Uint8Array | null = null
  try {
    bytes = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new IdentityError(path, `cannot read identity file ${path}: ${(err as Error).message}`)
  }
  if (bytes !== null) {
    let privateKey: PrivateKey
    try {
      privateKey = privateKeyFromProtobuf(bytes)
    } catch (err) {
      throw new IdentityError(path, `${path} is not a bmrt identity file (${(err as Error).message}); move it away to create a new identity`)
    }
    await checkKeyPair(path, privateKey)
    const mode = process.platform === 'win32' ? 0 : (await stat(path)).mode & 0o777
    return { privateKey, created: false, exposedMode: (mode & 0o077) !== 0 ? mode : null }
  }
  const privateKey = await generateKeyPair('Ed25519')
  await mkdir(dirname(path), { recursive: true })
  // 'wx': never overwrite a key another process created meanwhile.
  await writeFile(path, privateKeyToProtobuf(privateKey), { mode: 0o600, flag: 'wx' })
  await chmod(path, 0o600) // the mode above is subject to the umask
  return { privateKey, created: true, exposedMode: null }
}

/**
 * "12D3KooW…uvwxyz": the head shows what kind of id it is (Ed25519 ids all start 12D3KooW), the
 * last 6 characters tell peers apart, as in Petals' route log ("via …" + last 6).
 */
export function shortPeerId (peerId: string): string {
  return peerId.length <= 16 ? peerId : `${peerId.slice(0, 8)}…${peerId.slice(-6)}`
}
