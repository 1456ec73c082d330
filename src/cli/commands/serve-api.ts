/**
 * `edgetoken serve-api`: the reference protected telemetry API ({@link createReceiver}) on
 * `node:http`, for the demo, tests, and as a starting point for a real ingest service.
 */
import { createServer, type Server } from 'node:http'
import { ConfigError } from '../../errors.js'
import { isLoopbackHost } from '../../lib/url.js'
import type { ReceivedBatch } from '../../telemetry/receiver/receiver.js'
import type { CommandContext, CommandModule } from '../context.js'

const DEFAULT_PORT = 8080
const DEFAULT_HOST = '127.0.0.1'

const help = `Usage: edgetoken serve-api [--port N] [--host H] [--issuer URL] [--audience A]

Runs the reference protected telemetry API: POST batches in edgetoken's wire format with a
Bearer JWT access token from the issuer (signature via its JWKS, iss, aud, exp, scope
telemetry:write); batches are deduplicated by Idempotency-Key and kept in memory.
One line per accepted batch on stderr (never a token). Stops on SIGINT/SIGTERM.

Options:
  --port N         port to listen on; 0 picks a free one (env EDGETOKEN_API_PORT, default ${DEFAULT_PORT})
  --host H         address to bind (env EDGETOKEN_API_HOST, default ${DEFAULT_HOST})
  --issuer URL     accepted token issuer (env EDGETOKEN_API_ISSUER, default: the config's authority)
  --audience A     required token audience (env EDGETOKEN_API_AUDIENCE; required)
  --json           print {"event":"listening","url"} and {"event":"batch",...} on stdout

Exit codes: 0 stopped by a signal, 2 usage or config error, 1 cannot listen.`

function stringOption(ctx: CommandContext, name: string, envName: string): string | undefined {
  const value = ctx.options[name]
  if (typeof value === 'string') return value
  const fromEnv = ctx.env[envName]
  return fromEnv === undefined || fromEnv === '' ? undefined : fromEnv
}

function parsePort(text: string | undefined): number {
  if (text === undefined) return DEFAULT_PORT
  if (!/^[0-9]{1,5}$/.test(text) || Number(text) > 65535) {
    throw new ConfigError(`--port must be an integer from 0 to 65535, got '${text.slice(0, 20)}'`, {
      key: 'port',
    })
  }
  return Number(text)
}

async function issuerFrom(ctx: CommandContext): Promise<string> {
  const explicit = stringOption(ctx, 'issuer', 'EDGETOKEN_API_ISSUER')
  if (explicit) return explicit
  const { loadConfig } = await import('../../config/load.js')
  const config = await loadConfig({ options: ctx.options, env: ctx.env })
  if (!config.authority) {
    throw new ConfigError('serve-api needs --issuer (or the config authority)', { key: 'issuer' })
  }
  return config.authority
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
}

function urlOf(server: Server, host: string): string {
  const address = server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  const shown = host.includes(':') ? `[${host}]` : host
  return `http://${shown}:${port}/`
}

const command: CommandModule = {
  help,
  async run(ctx) {
    const port = parsePort(stringOption(ctx, 'port', 'EDGETOKEN_API_PORT'))
    const host = stringOption(ctx, 'host', 'EDGETOKEN_API_HOST') ?? DEFAULT_HOST
    const audience = stringOption(ctx, 'audience', 'EDGETOKEN_API_AUDIENCE')
    if (!audience)
      throw new ConfigError('serve-api needs --audience (the API identifier)', { key: 'audience' })
    const issuer = await issuerFrom(ctx)
    if (!isLoopbackHost(host)) ctx.warn(`serving plain http on ${host}: put TLS in front of it`)

    const { createReceiver } = await import('../../telemetry/receiver/receiver.js')
    const receiver = createReceiver({
      issuer,
      audience,
      keepBatches: false,
      onBatch: (batch: ReceivedBatch) => {
        ctx.stderr.write(
          `serve-api: batch ${batch.batchId} seq ${batch.seq}: ${batch.records.length} records from ${batch.deviceId}\n`,
        )
        ctx.emit({
          event: 'batch',
          device_id: batch.deviceId,
          batch_id: batch.batchId,
          seq: batch.seq,
          records: batch.records.length,
        })
      },
    })
    const server = createServer(receiver.handler)
    // A signal that arrives while listening must still stop the server.
    if (ctx.signal.aborted) return 0
    await listen(server, port, host)
    const url = urlOf(server, host)
    ctx.stderr.write(`serve-api: listening on ${url} (issuer ${issuer}, audience ${audience})\n`)
    ctx.emit({ event: 'listening', url })

    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) resolve()
      else ctx.signal.addEventListener('abort', () => resolve(), { once: true })
    })
    receiver.close()
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
    return 0
  },
}
export default command
