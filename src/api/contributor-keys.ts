// API keys bound to contributors (issue 21): a gateway operator gives each contributor a key of
// their own, bound to the peer id their servers run under, so that the jobs they submit are queued
// by the credits those servers earned (jobs.ts, creditRank). The file has one key per line:
//
//   # key                             peer id of the contributor's servers
//   3q2+7w-example-key-of-alice       12D3KooWQ...
//
// Blank lines and lines starting with # are skipped.

import { readFile } from 'node:fs/promises'
import { peerIdFromString } from '@libp2p/peer-id'

/** Keys shorter than this are refused: they would be guessable. */
export const MIN_CONTRIBUTOR_KEY_CHARS = 16

/** A contributor-keys file that cannot be used, with the line at fault. */
export class ContributorKeysError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ContributorKeysError'
  }
}

/** The keys in `text` (from `source`, named in errors): key → peer id. */
export function parseContributorKeys (text: string, source: string): Map<string, string> {
  const keys = new Map<string, string>()
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const at = `${source}:${i + 1}`
    const fields = line.split(/\s+/)
    if (fields.length !== 2) throw new ContributorKeysError(`${at}: a line is "<api-key> <peer-id>", got ${fields.length} field(s)`)
    const [key, peerId] = fields
    if (key.length < MIN_CONTRIBUTOR_KEY_CHARS) throw new ContributorKeysError(`${at}: the key has ${key.length} characters; give at least ${MIN_CONTRIBUTOR_KEY_CHARS}, or it could be guessed`)
    try {
      peerIdFromString(peerId)
    } catch {
      throw new ContributorKeysError(`${at}: ${peerId.slice(0, 80)} is not a peer id (bmrt-node prints its own as "peer id 12D3KooW...")`)
    }
    if (keys.has(key)) throw new ContributorKeysError(`${at}: this key is given twice`)
    keys.set(key, peerId)
  }
  return keys
}

/** The keys in the file at `path`. */
export async function readContributorKeys (path: string): Promise<Map<string, string>> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new ContributorKeysError(`cannot read the contributor keys: ${(err as Error).message}`)
  }
  return parseContributorKeys(text, path)
}
