// What a backend's span throws when a call fails, as classes the server matches with instanceof.
// The native addon throws JS errors with a string `code` (addon/src/binding.cc: CACHE_FULL for
// bmrt::CacheFullError, INVALID_ARGUMENT for std::invalid_argument, INTERNAL for the rest);
// fromAddonError turns them into these classes, in this one place. Each class keeps the addon's
// code string in `code`, so a caller that logs or compares it sees the same value as before.

/** The session does not fit in the span's attention cache budget: the client should go elsewhere. */
export class CacheFullError extends Error {
  readonly code = 'CACHE_FULL'
  override readonly name = 'CacheFullError'
}

/** The caller's fault: blocks outside the span, hidden states of the wrong shape, a closed span. */
export class InvalidInputError extends Error {
  readonly code = 'INVALID_ARGUMENT'
  override readonly name = 'InvalidInputError'
}

/** The backend itself failed (a kernel, a device, the torch worker). */
export class BackendError extends Error {
  readonly code = 'INTERNAL'
  override readonly name = 'BackendError'
}

/**
 * The class for an error the addon threw, by its `code`; anything else (an error raised in JS
 * before the addon was called, one without a code) is returned as it is.
 */
export function fromAddonError (err: unknown): unknown {
  if (!(err instanceof Error) || err instanceof CacheFullError || err instanceof InvalidInputError || err instanceof BackendError) return err
  const code = (err as { code?: unknown }).code
  const Class = code === 'CACHE_FULL' ? CacheFullError : code === 'INVALID_ARGUMENT' ? InvalidInputError : code === 'INTERNAL' ? BackendError : null
  if (Class === null) return err
  return new Class(err.message, { cause: err })
}

/** Runs a call into the addon, translating what it throws (see fromAddonError). */
export function addonCall<T> (call: () => T): T {
  try {
    return call()
  } catch (err) {
    throw fromAddonError(err)
  }
}

/** As addonCall, for the addon's asynchronous calls (forward, logits). */
export async function addonCallAsync<T> (call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (err) {
    throw fromAddonError(err)
  }
}
