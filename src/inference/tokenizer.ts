// Text ↔ token ids with the model's own tokenizer.json (via @huggingface/tokenizers, pure JS), and
// chat prompts through the model's jinja chat template (via @huggingface/jinja).

import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers'
import { Template } from '@huggingface/jinja'

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant'
  content: string
}

export class Tokenizer {
  private readonly tokenizer: HfTokenizer
  private readonly chatTemplate: Template | null
  private readonly specialTokens: { bos_token: string, eos_token: string }

  private constructor (tokenizer: HfTokenizer, config: Record<string, unknown>, source: string) {
    this.tokenizer = tokenizer
    this.specialTokens = { bos_token: tokenText(config.bos_token), eos_token: tokenText(config.eos_token) }
    const template = pickChatTemplate(config.chat_template)
    try {
      this.chatTemplate = template === null ? null : new Template(template)
    } catch (err) {
      throw new Error(`${source}: the chat template does not parse: ${(err as Error).message}`)
    }
  }

  static async load (modelDir: string): Promise<Tokenizer> {
    const tokenizerPath = join(modelDir, 'tokenizer.json')
    const configPath = join(modelDir, 'tokenizer_config.json')
    const tokenizerJson = await readJson(tokenizerPath, `no tokenizer.json in ${modelDir}: bmrt needs the model's Hugging Face fast tokenizer file`)
    const config = await readJson(configPath, null) ?? {}
    try {
      return new Tokenizer(new HfTokenizer(tokenizerJson, config), config, configPath)
    } catch (err) {
      throw new Error(`${tokenizerPath}: cannot build the tokenizer: ${(err as Error).message}`)
    }
  }

  /** Token ids of `text`, with the model's special tokens (BOS) unless `addSpecialTokens` is false. */
  encode (text: string, addSpecialTokens = true): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids
  }

  decode (ids: readonly number[], skipSpecialTokens = true): string {
    return this.tokenizer.decode([...ids], { skip_special_tokens: skipSpecialTokens })
  }

  get hasChatTemplate (): boolean {
    return this.chatTemplate !== null
  }

  /**
   * The prompt text for a conversation, ready for the assistant's reply: the model's chat template
   * when it has one, else a plain "User: … / Assistant:" transcript.
   */
  applyChatTemplate (messages: readonly ChatMessage[]): string {
    if (this.chatTemplate === null) {
      const lines = messages.map(m => `${m.role[0].toUpperCase()}${m.role.slice(1)}: ${m.content}`)
      return `${lines.join('\n')}\nAssistant:`
    }
    return this.chatTemplate.render({ messages, add_generation_prompt: true, ...this.specialTokens })
  }

  /** Encodes chat-template output: the template already wrote the special tokens it wants. */
  encodeChat (messages: readonly ChatMessage[]): number[] {
    if (this.chatTemplate === null) return this.encode(this.applyChatTemplate(messages))
    return this.encode(this.applyChatTemplate(messages), false)
  }
}

async function readJson (path: string, missingMessage: string | null): Promise<Record<string, unknown> | null> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch {
    if (missingMessage === null) return null
    throw new Error(missingMessage)
  }
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new Error(`${path} is not valid JSON: ${(err as Error).message}`)
  }
}

/** tokenizer_config.json spells special tokens as strings or as {content: "..."} objects. */
function tokenText (value: unknown): string {
  if (typeof value === 'string') return value
  if (value !== null && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content
  return ''
}

/** chat_template is a string, or a list of named templates of which 'default' is the chat one. */
function pickChatTemplate (value: unknown): string | null {
  if (typeof value === 'string') return value
  if (Array.isArray(value)) {
    const named = value.find(t => t?.name === 'default') ?? value[0]
    return typeof named?.template === 'string' ? named.template : null
  }
  return null
}
