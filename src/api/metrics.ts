// Prometheus text for /metrics (prom-client): the swarm's health per model as health.petals.dev
// exports it (blocks, servers per state, minimum replication), the job board, the API's traffic,
// and prom-client's process metrics. Swarm gauges read the monitor's latest snapshot when scraped.

import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import type { ApiModel } from './api-model.js'
import type { JobBoard } from './jobs.js'
import type { SwarmMonitor } from './swarm-report.js'

export class GatewayMetrics {
  private readonly registry = new Registry()
  private readonly requests: Counter<'path' | 'status'>

  constructor (monitor: SwarmMonitor, jobs: JobBoard, model: ApiModel) {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry, prefix: 'bmrt_' })
    const perModel = async (gauge: Gauge<string>, value: (m: Awaited<ReturnType<SwarmMonitor['report']>>['models'][number]) => Array<[Record<string, string>, number]>): Promise<void> => {
      const report = await monitor.report()
      gauge.reset()
      for (const m of report.models) for (const [labels, v] of value(m)) gauge.set({ model: m.name, ...labels }, v)
    }
    new Gauge({ // eslint-disable-line no-new
      name: 'bmrt_model_blocks', help: 'blocks of each announced model', labelNames: ['model'], registers,
      async collect () { await perModel(this, m => [[{}, m.num_blocks]]) }
    })
    new Gauge({ // eslint-disable-line no-new
      name: 'bmrt_model_min_replication', help: 'online servers holding the least-served block (0: the model cannot run)', labelNames: ['model'], registers,
      async collect () { await perModel(this, m => [[{}, m.min_replication]]) }
    })
    new Gauge({ // eslint-disable-line no-new
      name: 'bmrt_model_servers', help: 'servers of each model by state', labelNames: ['model', 'state'], registers,
      async collect () {
        await perModel(this, m => ['online', 'joining', 'unreachable', 'offline'].map(state => [{ state }, m.servers.filter(s => s.state === state).length]))
      }
    })
    new Gauge({ // eslint-disable-line no-new
      name: 'bmrt_jobs', help: 'jobs on the board by status', labelNames: ['status'], registers,
      collect () {
        for (const [status, count] of Object.entries(jobs.counts())) this.set({ status }, count)
      }
    })
    new Gauge({ // eslint-disable-line no-new
      name: 'bmrt_active_generations', help: 'generations running now (API requests and jobs)', registers,
      collect () { this.set(model.active) }
    })
    new Counter({ // eslint-disable-line no-new
      name: 'bmrt_generated_tokens_total', help: 'tokens generated since the gateway started', registers,
      collect () {
        this.reset()
        this.inc(model.generatedTokens)
      }
    })
    this.requests = new Counter({ name: 'bmrt_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['path', 'status'], registers })
  }

  /** Counts a request; `path` is the route (e.g. /api/v1/jobs/:id), not the raw URL. */
  countRequest (path: string, status: number): void {
    this.requests.inc({ path, status: String(status) })
  }

  get contentType (): string {
    return this.registry.contentType
  }

  async text (): Promise<string> {
    return await this.registry.metrics()
  }
}
