// The error classes at the seams: what the addon throws becomes a class in one place, and an
// OptionError reads with the library's option names or with the CLI's flags.

import assert from 'node:assert/strict'
import { BackendError, CacheFullError, fromAddonError, InvalidInputError } from '../src/inference/errors.js'
import { OptionError } from '../src/util/errors.js'
import { flagOf, OPTION_FLAGS } from '../src/cli/options.js'

describe('error classes', () => {
  it("turns the addon's error codes into classes, keeping the message and the code", () => {
    const addon = (code: string, message: string): Error => Object.assign(new Error(message), { code })
    const full = fromAddonError(addon('CACHE_FULL', 'attention cache full'))
    assert.ok(full instanceof CacheFullError)
    assert.equal(full.message, 'attention cache full')
    assert.equal(full.code, 'CACHE_FULL')
    assert.ok(fromAddonError(addon('INVALID_ARGUMENT', 'bad shape')) instanceof InvalidInputError)
    assert.ok(fromAddonError(addon('INTERNAL', 'kernel failed')) instanceof BackendError)
    const plain = new Error('no code')
    assert.equal(fromAddonError(plain), plain, 'an error without a code passes through')
    const already = new CacheFullError('full')
    assert.equal(fromAddonError(already), already)
  })

  it('names options as the library does, or as the CLI does', () => {
    const err = new OptionError(['numBlocks', 'load.maxCacheTokens'], name => `ask for fewer (${name('numBlocks')} 3), or a smaller ${name('load.maxCacheTokens')}`)
    assert.equal(err.message, 'ask for fewer (options.numBlocks 3), or a smaller options.load.maxCacheTokens')
    assert.equal(err.render(flagOf), 'ask for fewer (--num-blocks 3), or a smaller --attn-cache-tokens')
    assert.equal(flagOf('noSuchOption'), 'options.noSuchOption', 'an option without a flag keeps its library name')
    for (const flag of Object.values(OPTION_FLAGS)) assert.match(flag, /^--[a-z-]+$/)
  })
})
