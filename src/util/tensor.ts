// Hidden states as they travel and are kept: [batch, tokens, hidden], row-major.

/** Tokens [first, first + count) of every sequence of [batch, tokens, hidden]. */
export function sliceTokens (x: Float32Array, batch: number, tokens: number, hidden: number, first: number, count: number): Float32Array {
  if (batch === 1 || count === tokens) {
    if (batch === 1) return x.subarray(first * hidden, (first + count) * hidden)
    return x
  }
  const out = new Float32Array(batch * count * hidden)
  for (let b = 0; b < batch; b++) {
    out.set(x.subarray((b * tokens + first) * hidden, (b * tokens + first + count) * hidden), b * count * hidden)
  }
  return out
}

/** Parts laid end to end: the outputs of a batch's sequences as one [batch, tokens, hidden]. */
export function concatTokens (parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0]
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0))
  let offset = 0
  for (const part of parts) { out.set(part, offset); offset += part.length }
  return out
}
