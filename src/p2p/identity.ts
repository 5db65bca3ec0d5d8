// A node's persistent identity: an Ed25519 private key in a file of its own (permissions 0600),
// created on first run, so the peer id (and the addresses others saved) survive restarts; and the
// key of each running node, which signs its records; and the short form of a peer id that logs and
// reports show.

import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
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

/** Reads the key at `path`, or creates it there; `created` says which. */
export async function loadOrCreateIdentity (path: string): Promise<{ privateKey: PrivateKey, created: boolean }> {
  let bytes: Uint8Array | null = null
  try {
    bytes = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot read identity file ${path}: ${(err as Error).message}`)
  }
  if (bytes !== null) {
    try {
      return { privateKey: privateKeyFromProtobuf(bytes), created: false }
    } catch (err) {
      throw new Error(`${path} is not a bmrt identity file (${(err as Error).message}); move it away to create a new identity`)
    }
  }
  const privateKey = await generateKeyPair('Ed25519')
  await mkdir(dirname(path), { recursive: true })
  // 'wx': never overwrite a key another process created meanwhile.
  await writeFile(path, privateKeyToProtobuf(privateKey), { mode: 0o600, flag: 'wx' })
  await chmod(path, 0o600) // the mode above is subject to the umask
  return { privateKey, created: true }
}

/**
 * "12D3KooW…uvwxyz": the head shows what kind of id it is (Ed25519 ids all start 12D3KooW), the
 * last 6 characters tell peers apart, as in Petals' route log ("via …" + last 6).
 */
export function shortPeerId (peerId: string): string {
  return peerId.length <= 16 ? peerId : `${peerId.slice(0, 8)}…${peerId.slice(-6)}`
}
