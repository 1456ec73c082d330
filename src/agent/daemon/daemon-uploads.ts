/**
 * The daemon's uploads: the uploader that sends the spool to the protected API, its events worded
 * for the log, and the loop that supervises it for as long as the daemon runs. The loop parks
 * while sign-in is required (uploading cannot succeed without a token; the spool keeps the
 * readings), enters that state when the uploader finds the refresh token dead, and backs off on
 * anything else, so that nothing short of a stop ends the uploads.
 *
 * Separate from the daemon because the supervision policy (what parks, what backs off, what is
 * worth a warning) is its own concern, independent of how tokens or readings arrive.
 *
 * @packageDocumentation
 */
import type { TelemetryConfig } from '../../config/types.js'
import { isEdgeTokenError } from '../../errors.js'
import { backoffDelayMs } from '../../lib/backoff.js'
import type { Spool } from '../../telemetry/spool/spool.js'
import type { TokenGetter, UploadEvent, Uploader } from '../../telemetry/upload/uploader.js'
import { type DaemonOutput, errorText } from './daemon-output.js'

/** Longest grace the batch in flight gets on stop, ms (at most half the shutdown budget). */
const MAX_SHUTDOWN_GRACE_MS = 5000

/** Options of {@link startUploads}. */
export interface DaemonUploadsOptions {
  /** The spool to send. */
  spool: Spool
  /** The API's ingest URL. */
  endpoint: string
  /** Batch size and linger. */
  telemetry: Pick<TelemetryConfig, 'batchMaxRecords' | 'lingerMs'>
  /** This device's id. */
  deviceId: string
  /** The daemon's shutdown budget, ms: the batch in flight gets part of it. */
  shutdownTimeoutMs: number
  /** How often an idle spool is checked for new records, ms; the uploader's default when omitted. */
  idlePollMs?: number | undefined
  /** Access tokens (the daemon's one acquisition path). */
  getAccessToken: TokenGetter
  /** The daemon's stop signal: ends the loop. */
  signal: AbortSignal
  /** Log, warnings and events. */
  output: DaemonOutput
  /** Whether sign-in is required now: the loop parks until {@link DaemonUploads.wake}. */
  isSigninRequired: () => boolean
  /** The uploader found the refresh token dead. */
  onSigninRequired: (reason: string) => void
}

/** The running uploads; see {@link startUploads}. */
export interface DaemonUploads {
  /** The uploader (the shutdown drains and closes it). */
  readonly uploader: Uploader
  /** Resolves when the loop has ended (after the stop signal). */
  readonly done: Promise<void>
  /** Records the API acknowledged so far. */
  readonly uploadedRecords: number
  /** Batches the API acknowledged so far. */
  readonly uploadedBatches: number
  /** Resumes a loop parked while sign-in was required. */
  wake(): void
}

/** Resolves after `ms`, or at once when `signal` fires. Never rejects. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve()
      return
    }
    const done = () => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })
}

/**
 * Creates the uploader and starts its supervision loop.
 *
 * @param options - spool, endpoint, batching, tokens, signal, output and the sign-in hooks.
 * @returns the running uploads.
 */
export async function startUploads(options: DaemonUploadsOptions): Promise<DaemonUploads> {
  const { signal, telemetry } = options
  const { log, warn, emit } = options.output
  let uploadedRecords = 0
  let uploadedBatches = 0
  // Since when batches have been failing (epoch ms), and how many retries: the first failure is a
  // warning, the first delivery after it a line of its own, so an outage reads as two lines.
  let failingSince: number | undefined
  let retriesSinceDelivery = 0
  let wakeUp: (() => void) | undefined
  const { Uploader } = await import('../../telemetry/upload/uploader.js')
  const uploader = new Uploader({
    spool: options.spool,
    endpoint: options.endpoint,
    deviceId: options.deviceId,
    batchMaxRecords: telemetry.batchMaxRecords,
    lingerMs: telemetry.lingerMs,
    shutdownGraceMs: Math.min(MAX_SHUTDOWN_GRACE_MS, Math.floor(options.shutdownTimeoutMs / 2)),
    getAccessToken: options.getAccessToken,
    onEvent: (event: UploadEvent) => {
      if (event.type === 'delivered') {
        uploadedRecords += event.records
        uploadedBatches += 1
        options.output.debug(
          `edgetoken: uploaded batch ${event.batchId} seq ${event.seq} (${event.records} records)`,
        )
        emit({ event: 'uploaded', batch_id: event.batchId, seq: event.seq, records: event.records })
        if (failingSince !== undefined) {
          const seconds = Math.round((Date.now() - failingSince) / 1000)
          log(
            `edgetoken: uploads resumed: batch ${event.batchId} delivered after ${retriesSinceDelivery} ${retriesSinceDelivery === 1 ? 'retry' : 'retries'} (${seconds} s)`,
          )
          failingSince = undefined
          retriesSinceDelivery = 0
        }
      } else if (event.type === 'retry') {
        failingSince ??= Date.now()
        retriesSinceDelivery += 1
        // The first failure and every tenth: an API down for an hour is a few lines, not hundreds.
        if (event.attempt === 1 || event.attempt % 10 === 0) {
          warn(
            `upload of ${event.batchId} failed (${event.reason}); retry ${event.attempt} in ${Math.ceil(event.delayMs / 1000)} s`,
          )
        }
      } else {
        // The API answered: it is reachable, whatever it thought of this batch.
        failingSince = undefined
        retriesSinceDelivery = 0
        warn(
          `the API rejected batch ${event.batchId} for good (${event.reason}); ${event.records} records moved to the dead-letter file`,
        )
      }
    },
  })
  const done = (async () => {
    let failures = 0
    while (!signal.aborted) {
      if (options.isSigninRequired()) {
        await new Promise<void>((resolve) => {
          wakeUp = resolve
          signal.addEventListener('abort', () => resolve(), { once: true })
        })
        wakeUp = undefined
        continue
      }
      try {
        await uploader.run({
          signal,
          ...(options.idlePollMs === undefined ? {} : { idlePollMs: options.idlePollMs }),
        })
        failures = 0
      } catch (err) {
        if (signal.aborted) break
        if (isEdgeTokenError(err, 'ERR_SIGNIN_REQUIRED')) {
          options.onSigninRequired(errorText(err))
          continue
        }
        // Anything else (the store, the disk): log, back off, go on; the spool keeps the data.
        const delay = backoffDelayMs(failures++, { baseMs: 2000, capMs: 300_000 })
        warn(`upload loop: ${errorText(err)}; retrying in ${Math.ceil(delay / 1000)} s`)
        await sleep(delay, signal)
      }
    }
  })()
  return {
    uploader,
    done,
    get uploadedRecords() {
      return uploadedRecords
    },
    get uploadedBatches() {
      return uploadedBatches
    },
    wake() {
      wakeUp?.()
    },
  }
}
