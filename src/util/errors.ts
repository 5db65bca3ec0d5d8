// Errors that name the options a caller gave. The library is called with options objects
// (BlockServer.start({ numBlocks }), DistributedModel.load(dir, { … })), the CLI with flags
// (--num-blocks): an OptionError keeps the option names apart from its words, so the library's
// message says `options.numBlocks` and the CLI renders the same error with its flag
// (src/cli/options.ts, OPTION_FLAGS).

/** How an option is named in a message: the library's `options.name`, or the CLI's flag. */
export type OptionNamer = (option: string) => string

/** The library's way to name an option. */
export const optionsField: OptionNamer = option => `options.${option}`

/** A value of one or more options cannot work, together or with the model or machine. */
export class OptionError extends Error {
  override readonly name = 'OptionError'

  /**
   * @param options the names of the options at fault, as the library's options objects spell them
   * (nested ones with a dot: 'load.device')
   * @param describe the message, naming each option through the namer it is given
   */
  constructor (readonly options: readonly string[], private readonly describe: (name: OptionNamer) => string) {
    super(describe(optionsField))
  }

  /** The message with each option named by `name` (the CLI passes its flags). */
  render (name: OptionNamer): string {
    return this.describe(name)
  }
}
