// A Hugging Face checkpoint directory: one model.safetensors, or shards listed in
// model.safetensors.index.json. Shards are opened only when one of their tensors is asked for.

import { readFile, access } from 'node:fs/promises'
import { join } from 'node:path'
import { SafetensorsFile, type RawTensor, type TensorInfo } from './safetensors.js'
import { toFloat32 } from './dtype.js'

const SINGLE_FILE = 'model.safetensors'
const INDEX_FILE = 'model.safetensors.index.json'

/** Tensor names of the Llama layout in Hugging Face checkpoints. */
export const tensorNames = {
  embed: 'model.embed_tokens.weight',
  finalNorm: 'model.norm.weight',
  lmHead: 'lm_head.weight',
  layer: (i: number, suffix: string) => `model.layers.${i}.${suffix}`
}

export class Checkpoint {
  readonly dir: string
  /** tensor name → file name, or null when the directory has a single file whose header we have not read */
  private readonly weightMap: Map<string, string> | null
  private readonly files = new Map<string, Promise<SafetensorsFile>>()
  /** names of the tensors read so far, in order */
  readonly tensorsRead: string[] = []

  private constructor (dir: string, weightMap: Map<string, string> | null) {
    this.dir = dir
    this.weightMap = weightMap
  }

  static async open (dir: string): Promise<Checkpoint> {
    const indexPath = join(dir, INDEX_FILE)
    let indexText: string | null = null
    try {
      indexText = await readFile(indexPath, 'utf8')
    } catch {}
    if (indexText !== null) {
      let weightMap: unknown
      try {
        weightMap = JSON.parse(indexText).weight_map
      } catch (err) {
        throw new Error(`${indexPath} is not valid JSON: ${(err as Error).message}`)
      }
      if (weightMap === null || typeof weightMap !== 'object') throw new Error(`${indexPath} has no weight_map object`)
      const entries = Object.entries(weightMap as Record<string, unknown>)
      if (entries.some(([, file]) => typeof file !== 'string' || file.includes('/') || file.includes('\\'))) {
        throw new Error(`${indexPath}: weight_map values must be file names in the same directory`)
      }
      return new Checkpoint(dir, new Map(entries as Array<[string, string]>))
    }
    try {
      await access(join(dir, SINGLE_FILE))
    } catch {
      throw new Error(`no ${SINGLE_FILE} or ${INDEX_FILE} in ${dir}: bmrt loads safetensors checkpoints`)
    }
    return new Checkpoint(dir, null)
  }

  private fileOf (name: string): string {
    if (this.weightMap === null) return SINGLE_FILE
    const file = this.weightMap.get(name)
    if (file === undefined) throw new Error(`${join(this.dir, INDEX_FILE)} lists no tensor '${name}'`)
    return file
  }

  private openFile (file: string): Promise<SafetensorsFile> {
    let opened = this.files.get(file)
    if (opened === undefined) {
      opened = SafetensorsFile.open(join(this.dir, file))
      opened.catch(() => this.files.delete(file)) // let a later call retry and report the error again
      this.files.set(file, opened)
    }
    return opened
  }

  /** Header entry of a tensor (opens its file's header, reads no tensor data); null when absent. */
  async info (name: string): Promise<TensorInfo | null> {
    if (this.weightMap !== null && !this.weightMap.has(name)) return null
    const file = await this.openFile(this.fileOf(name))
    return file.tensors.get(name) ?? null
  }

  async has (name: string): Promise<boolean> {
    return (await this.info(name)) !== null
  }

  async readRaw (name: string): Promise<RawTensor> {
    const file = await this.openFile(this.fileOf(name))
    if (!file.tensors.has(name)) throw new Error(`${file.path} has no tensor '${name}'`)
    const raw = await file.read(name)
    this.tensorsRead.push(name)
    return raw
  }

  /**
   * Where a tensor's bytes are (file path and header entry), after checking its shape and that the
   * file holds them; reads no tensor data. `shape` entries of -1 accept any size.
   */
  async locate (name: string, shape: number[]): Promise<{ path: string, info: TensorInfo }> {
    const file = await this.openFile(this.fileOf(name))
    const info = file.tensors.get(name)
    if (info === undefined) throw new Error(`${file.path} has no tensor '${name}'`)
    const fits = info.shape.length === shape.length && shape.every((d, i) => d === -1 || d === info.shape[i])
    if (!fits) {
      throw new Error(`${file.path}: tensor '${name}' has shape [${info.shape.join(', ')}], config.json implies [${shape.join(', ')}]`)
    }
    file.checkInFile(info)
    return { path: file.path, info }
  }

  /** Reads a tensor as fp32, checking its shape as `locate` does. */
  async readFloat32 (name: string, shape: number[]): Promise<Float32Array> {
    await this.locate(name, shape)
    const { info, bytes } = await this.readRaw(name)
    return toFloat32(bytes, info.dtype)
  }

  /** Bytes read from disk so far (headers and tensors) across the files opened. */
  async bytesRead (): Promise<number> {
    let total = 0
    for (const file of this.files.values()) total += (await file).bytesRead
    return total
  }

  /** Names of the files opened so far. */
  filesOpened (): string[] {
    return [...this.files.keys()]
  }

  async close (): Promise<void> {
    const files = [...this.files.values()]
    this.files.clear()
    await Promise.allSettled(files.map(async f => await (await f).close()))
  }
}
