// Option parsers and defaults shared by the bmrt and bmrt-node commands.

import { fileURLToPath } from 'node:url'
import { InvalidArgumentError } from 'commander'

/** The bundled stories260K model, used when --model is not given. */
export const BUNDLED_MODEL = fileURLToPath(new URL('../../../models/stories260K', import.meta.url))

export function integer (min: number) {
  return (value: string): number => {
    const n = Number(value)
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}`)
    return n
  }
}

export function number (check: (n: number) => boolean, expectation: string) {
  return (value: string): number => {
    const n = Number(value)
    if (value.trim() === '' || !Number.isFinite(n) || !check(n)) throw new InvalidArgumentError(`expected ${expectation}`)
    return n
  }
}

/** Collects a repeatable option's values. */
export function repeatable (value: string, previous: string[] = []): string[] {
  return [...previous, value]
}

/** Parses `a:b` into a block span [a, b). */
export function blockSpan (value: string): [number, number] {
  const match = /^(\d+):(\d+)$/.exec(value.trim())
  if (match === null || Number(match[1]) >= Number(match[2])) throw new InvalidArgumentError('expected START:END with START < END, e.g. 0:20')
  return [Number(match[1]), Number(match[2])]
}

/** Prints an error the way every bmrt command does, and sets a failing exit code. */
export function fail (command: string, err: unknown): void {
  process.stderr.write(`${command}: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exitCode = 1
}
