// Small text helpers every layer may use (src/util imports nothing of bmrt's).

/**
 * A string from a peer or a user, cut short for an error message or a log line (their input is
 * not ours to echo in full).
 */
export function clip (text: string, max = 64): string {
  return text.length <= max ? text : `${text.slice(0, max)}... (${text.length} characters)`
}
