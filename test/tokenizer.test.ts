// The bundled model's tokenizer, and chat templates.

import assert from 'node:assert/strict'
import { copyFile, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Tokenizer } from '../src/inference/tokenizer.js'
import { BUNDLED_MODEL, scratchDir } from './helpers.js'

describe('tokenizer', () => {
  let tokenizer: Tokenizer
  before(async () => { tokenizer = await Tokenizer.load(BUNDLED_MODEL) })

  it('round-trips the bundled model\'s kind of text, including bytes outside its vocabulary', () => {
    const texts = [
      'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.',
      'Tom said, "Hi, Tweety! Can I play with you?"\nTweety said yes.',
      '  two leading spaces, tabs\tand émojis 😀 survive through byte fallback'
    ]
    for (const text of texts) {
      const ids = tokenizer.encode(text)
      assert.equal(ids[0], 1, 'BOS first')
      assert.equal(tokenizer.decode(ids), text)
      assert.deepEqual(tokenizer.encode(text, false), ids.slice(1))
    }
  })

  it('encodes the prompts of EXPECTED.md as the reference does', () => {
    assert.deepEqual(tokenizer.encode('Once upon a time'), [1, 403, 407, 261, 378])
  })

  it('falls back to a plain transcript when the model has no chat template', () => {
    assert.equal(tokenizer.hasChatTemplate, false)
    assert.equal(tokenizer.applyChatTemplate([{ role: 'system', content: 'Be kind.' }, { role: 'user', content: 'Hi' }]), 'System: Be kind.\nUser: Hi\nAssistant:')
  })

  it('renders the model\'s jinja chat template, and explains a broken one', async () => {
    const { dir, cleanup } = await scratchDir()
    try {
      await copyFile(join(BUNDLED_MODEL, 'tokenizer.json'), join(dir, 'tokenizer.json'))
      const config = JSON.parse(await readFile(join(BUNDLED_MODEL, 'tokenizer_config.json'), 'utf8'))
      const template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
      await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: template }))
      const chat = await Tokenizer.load(dir)
      const messages = [{ role: 'user' as const, content: 'Tell me a story.' }]
      assert.equal(chat.applyChatTemplate(messages), '<s>[user] Tell me a story.\n[assistant]')
      const ids = chat.encodeChat(messages)
      assert.equal(ids.filter(id => id === 1).length, 1, 'the template\'s BOS only, not a second one')

      await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: '{% for %}' }))
      await assert.rejects(Tokenizer.load(dir), /the chat template does not parse/)
    } finally {
      await cleanup()
    }
  })
})
