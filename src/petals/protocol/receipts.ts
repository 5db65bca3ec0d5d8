// Signed receipts (issue 21): for each step it answers, a server signs what it computed (model,
// blocks, the client's session nonce, position, token count, batch, wire dtype, weight format, and
// SHA-256 hashes of the input and output bytes). A receipt plus the session's inputs is evidence
// that anyone holding the blocks can check (evidence.ts); the client keeps the receipts of each
// server session it has open. Petals has no such thing.
//
// Signatures are Ed25519 with the node's libp2p identity key, made and checked with node:crypto's
// KeyObjects kept per key: 41-62 µs to sign and 119-162 µs to verify on the 2-core dev machine,
// against 88-139 µs and 143-198 µs through @libp2p/crypto, which builds a key object for every
// call (four alternating rounds of 2000). A client checks each receipt's fields and hashes as it
// arrives (14-32 µs) and its signature only when the receipt is credited (a gateway's ledger) or
// becomes evidence; the server's hash and signature take 58-101 µs a step (npm run bench:verify).

import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { WEIGHT_FORMATS, type DType, type WeightFormat } from '../../inference/dtype.js'
import { Receipt, SignedReceipt, type WireDType } from './messages.js'
import { fromWireDType } from './wire.js'

export { Receipt, SignedReceipt } from './messages.js'

/** What a receipt's signature covers: this prefix, then the encoded Receipt. */
const RECEIPT_DOMAIN = new TextEncoder().encode('bmrt-receipt/1')

/** A session nonce's length in bytes: at least 16 (unguessable), at most 64. */
export const SESSION_NONCE_BYTES = { min: 16, max: 64 }

/** A receipt that does not say what was asked and answered, or is not signed by its server. */
export class ReceiptError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ReceiptError'
  }
}

export function sha256 (bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return createHash('sha256').update(bytes).digest() as Uint8Array<ArrayBuffer>
}

function base64url (bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url')
}

function signedBytes (receipt: Uint8Array): Uint8Array {
  const out = new Uint8Array(RECEIPT_DOMAIN.length + receipt.length)
  out.set(RECEIPT_DOMAIN)
  out.set(receipt, RECEIPT_DOMAIN.length)
  return out
}

/** Signs receipts with a node's Ed25519 identity key. */
export class ReceiptSigner {
  private readonly key: KeyObject

  constructor (privateKey: PrivateKey) {
    if (privateKey.type !== 'Ed25519') throw new Error(`receipts are signed with Ed25519 keys, not ${privateKey.type}`)
    // libp2p keeps an Ed25519 private key as the 32-byte seed followed by the 32-byte public key.
    const raw = privateKey.raw
    this.key = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: base64url(raw.subarray(0, 32)), x: base64url(raw.subarray(32)) }, format: 'jwk' })
  }

  sign (receipt: Receipt): SignedReceipt {
    const bytes = Receipt.encode(receipt)
    return { receipt: bytes, signature: sign(null, signedBytes(bytes), this.key) as Uint8Array<ArrayBuffer> }
  }
}

/** Public keys of the peers whose receipts this process checked, at most PUBLIC_KEYS_KEPT. */
const publicKeys = new Map<string, KeyObject>()
const PUBLIC_KEYS_KEPT = 1024

function publicKeyOf (peerId: string): KeyObject {
  let key = publicKeys.get(peerId)
  if (key === undefined) {
    const publicKey = peerIdFromString(peerId).publicKey
    if (publicKey?.type !== 'Ed25519') throw new ReceiptError(`${peerId} is not an Ed25519 peer id: its receipts cannot be checked`)
    key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: base64url(publicKey.raw) }, format: 'jwk' })
    if (publicKeys.size >= PUBLIC_KEYS_KEPT) publicKeys.delete(publicKeys.keys().next().value!)
    publicKeys.set(peerId, key)
  }
  return key
}

/** Checks that `peerId` signed `signed`; a ReceiptError when it did not. */
export function checkSignature (signed: SignedReceipt, peerId: string): void {
  let valid = false
  try {
    valid = verify(null, signedBytes(signed.receipt), publicKeyOf(peerId), signed.signature)
  } catch (err) {
    if (err instanceof ReceiptError) throw err
  }
  if (!valid) throw new ReceiptError(`the receipt is not signed by ${peerId}`)
}

/** The receipt inside `signed`, once its signature is checked against `peerId`'s key. */
export function openReceipt (signed: SignedReceipt, peerId: string): Receipt {
  checkSignature(signed, peerId)
  return decodeReceipt(signed)
}

/** The receipt inside `signed`, its signature unchecked; a ReceiptError when it does not decode. */
export function decodeReceipt (signed: SignedReceipt): Receipt {
  try {
    return Receipt.decode(signed.receipt)
  } catch (err) {
    throw new ReceiptError(`the receipt does not decode: ${(err as Error).message}`)
  }
}

/** A receipt's weight format, checked. */
export function receiptFormat (receipt: Receipt): WeightFormat {
  if (!(WEIGHT_FORMATS as readonly string[]).includes(receipt.format)) throw new ReceiptError(`the receipt names an unknown weight format '${receipt.format.slice(0, 20)}'`)
  return receipt.format as WeightFormat
}

/** A receipt's wire dtype, checked. */
export function receiptDType (receipt: Receipt): DType {
  try {
    return fromWireDType(receipt.dtype)
  } catch {
    throw new ReceiptError(`the receipt names an unknown dtype ${receipt.dtype}`)
  }
}

/** What a client asked and received in one step: the receipt for it must say exactly this. */
export interface ExpectedReceipt {
  model: string
  start: number
  end: number
  session: Uint8Array
  position: number
  tokens: number
  batch: number
  dtype: WireDType
  input: Uint8Array
  output: Uint8Array
  /** the weight format the server announced (undefined: any), so a receipt cannot claim a looser tolerance */
  format?: WeightFormat
}

/**
 * Checks that a receipt describes the step asked and answered; returns it decoded. Its signature
 * is left to openReceipt, when the receipt is credited or becomes evidence.
 */
export function checkReceipt (signed: SignedReceipt | undefined, expected: ExpectedReceipt): Receipt {
  if (signed === undefined) throw new ReceiptError('the answer carries no receipt')
  const receipt = decodeReceipt(signed)
  const fields: Array<[string, unknown, unknown]> = [
    ['model', receipt.model, expected.model], ['start', receipt.start, expected.start], ['end', receipt.end, expected.end],
    ['position', receipt.position, expected.position], ['tokens', receipt.tokens, expected.tokens], ['batch', receipt.batch, expected.batch],
    ['dtype', receipt.dtype, expected.dtype]
  ]
  for (const [name, got, want] of fields) {
    if (got !== want) throw new ReceiptError(`the receipt's ${name} is ${String(got).slice(0, 40)}, not ${String(want)}`)
  }
  if (!equalBytes(receipt.session, expected.session)) throw new ReceiptError('the receipt is for another session')
  if (!equalBytes(receipt.inputSha256, sha256(expected.input))) throw new ReceiptError('the receipt\'s input hash is not that of the step sent')
  if (!equalBytes(receipt.outputSha256, sha256(expected.output))) throw new ReceiptError('the receipt\'s output hash is not that of the answer')
  const format = receiptFormat(receipt)
  if (expected.format !== undefined && format !== expected.format) throw new ReceiptError(`the receipt names weight format ${format}, but the server announced ${expected.format}`)
  return receipt
}

export function equalBytes (a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b)
}
