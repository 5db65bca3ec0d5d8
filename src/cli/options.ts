// Option parsers and defaults shared by the bmrt and bmrt-node commands.

import { fileURLToPath } from 'node:url'
import { availableParallelism } from 'node:os'
import { InvalidArgumentError, Option, type Command } from 'commander'
import { multiaddr } from '@multiformats/multiaddr'
import type { LoadOptions } from '../inference/load-span.js'
import type { WeightFormat } from '../inference/native-backend.js'

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

/** Collects a repeatable multiaddr option, refusing what is not one. */
export function multiaddrArgument (value: string, previous: string[] = []): string[] {
  try {
    multiaddr(value)
  } catch {
    throw new InvalidArgumentError('expected a multiaddr such as /ip4/1.2.3.4/tcp/31337/p2p/12D3KooW...')
  }
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

export interface BackendCliOptions {
  backend: 'auto' | 'native' | 'js'
  dtype?: 'f32' | 'bf16' | 'f16'
  quant: 'none' | 'int8' | 'int4'
  threads: number
}

/** The options that choose how blocks run, shared by every command that runs blocks. */
export function addBackendOptions (command: Command): Command {
  return command
    .addOption(new Option('--backend <name>', 'block executor: native (the C++ addon), js (portable reference), auto = native when the addon built').choices(['auto', 'native', 'js']).default('auto'))
    .addOption(new Option('--dtype <dtype>', "weight storage of the native backend; default: the checkpoint's dtype").choices(['f32', 'bf16', 'f16']))
    .addOption(new Option('--quant <q>', 'quantise weights at load time (native backend): int8 per-row, int4 per group of 32').choices(['none', 'int8', 'int4']).default('none'))
    .option('--threads <n>', 'threads for the native kernels', integer(1), availableParallelism())
}

/** LoadOptions from the backend options. */
export function loadOptions (o: BackendCliOptions): LoadOptions {
  const format: WeightFormat | undefined = o.quant !== 'none' ? o.quant : o.dtype
  return { backend: o.backend, format, threads: o.threads }
}
