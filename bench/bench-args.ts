// The flags of a bench script: node's parseArgs plus --help, and one way to refuse a bad flag.

import { parseArgs } from 'node:util'

type Options = NonNullable<NonNullable<Parameters<typeof parseArgs>[0]>['options']>
const HELP_FLAG = { help: { type: 'boolean', default: false } } as const
type Values<T extends Options> = ReturnType<typeof parseArgs<{ options: T & typeof HELP_FLAG }>>['values']

/**
 * The values of `options` in this process's arguments. A flag parseArgs refuses prints
 * "BENCH: why", then `help`, and exits 2; --help prints `help` and exits 0.
 */
export function benchArgs<T extends Options> (bench: string, options: T, help: string): Values<T> {
  let values: Values<T>
  try {
    values = parseArgs({ options: { ...options, ...HELP_FLAG } }).values as Values<T>
  } catch (err) {
    console.error(`${bench}: ${(err as Error).message}\n\n${help}`)
    process.exit(2)
  }
  if ((values as { help?: boolean }).help === true) {
    console.log(help)
    process.exit(0)
  }
  return values
}
