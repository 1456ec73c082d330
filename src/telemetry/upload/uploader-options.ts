/**
 * The options of an uploader and of its drain, their defaults and their bounds, and what it
 * reports back: its events and a drain's result.
 *
 * Separate from the uploader so the tuning (batch size, timeouts, back-off caps, shutdown grace)
 * is in one place and applied once, and so the loops read settings, never raw options.
 *
 * @internal
 */
import type { Dispatcher } from 'undici'
import { assertSecureUrl } from '../../lib/url.js'
import type { Spool } from '../spool/spool.js'
import type { TokenGetter } from './upload-attempt.js'

/** Something the uploader did, for logs and the daemon's status. Never carries a token. */
export type UploadEvent =
  | { type: 'delivered'; batchId: string; seq: number; records: number }
  | { type: 'retry'; batchId: string; attempt: number; delayMs: number; reason: string; status?: number }
  | { type: 'dead-letter'; batchId: string; records: number; status: number; reason: string }

/** Options of `Uploader`. */
export interface UploaderOptions {
  /** The spool to drain. */
  spool: Spool
  /** The API's ingest URL (https, or http to loopback). */
  endpoint: string
  /** This device's id (`device_id`, and part of every batch id). */
  deviceId: string
  /** Access tokens. */
  getAccessToken: TokenGetter
  /** Records per batch. Default 500. */
  batchMaxRecords?: number
  /** Bytes of record JSON per batch. Default 512 KiB (the reference API takes 1 MiB bodies). */
  batchMaxBytes?: number
  /** How long the daemon lets a partial batch wait for more records, ms. Default 1000. */
  lingerMs?: number
  /**
   * Overall deadline of one POST: connect, send, the answer's headers and its whole body, ms. An
   * API that sends a byte every few seconds is given up on here (the batch is kept). Default 30000.
   */
  requestTimeoutMs?: number
  /**
   * Bytes of an answer read at most; past them the connection is dropped and the answer is
   * classified by its status and first 16 KiB. Default 65536.
   */
  maxResponseBytes?: number
  /** How long a batch in flight may still finish after the stop signal, ms. Default 5000. */
  shutdownGraceMs?: number
  /** First back-off delay, ms. Default 1000. */
  backoffBaseMs?: number
  /** Longest back-off delay, ms. Default 300000. */
  backoffCapMs?: number
  /**
   * Longest back-off delay of the daemon's loop while the endpoint itself is refused (403, 404,
   * 405, 410, 415, other 4xx): a configuration problem that only a person fixes. Default 3600000.
   */
  endpointBackoffCapMs?: number
  /** Random source for jitter (tests). */
  random?: () => number
  /** Sleeps; rejects or resolves early when the signal fires (tests inject a fake). */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>
  /** The clock, epoch ms (tests). */
  now?: () => number
  /**
   * The HTTP dispatcher; default one keep-alive connection to the endpoint's origin, through
   * HTTPS_PROXY/HTTP_PROXY when set (never for a loopback endpoint; NO_PROXY honoured).
   */
  dispatcher?: Dispatcher
  /** Receives what happened. */
  onEvent?: (event: UploadEvent) => void
}

/** Options of `Uploader.drain`. */
export interface DrainOptions {
  /** Stops the drain (SIGTERM); the batch in flight gets `shutdownGraceMs` to finish. */
  signal?: AbortSignal | undefined
  /** Consecutive failed attempts of one batch before giving up. Default 3. */
  maxRetries?: number
  /** Give up instead of waiting longer than this in total, ms (a long Retry-After). Default 30000. */
  maxWaitMs?: number
}

/** What a drain achieved. */
export interface DrainResult {
  /** Records the API acknowledged. */
  delivered: number
  /** Batches the API acknowledged. */
  batches: number
  /** Records moved to the dead-letter file. */
  deadLettered: number
}

/** {@link UploaderOptions} with the defaults and bounds applied. */
export interface UploaderSettings {
  /** The endpoint, checked to be secure. */
  url: URL
  /** Records per batch, at least 1. */
  maxRecords: number
  /** Bytes of record JSON per batch, at least 1024. */
  maxBytes: number
  /** How long a partial batch waits for more records, ms. */
  lingerMs: number
  /** The overall deadline of one POST, ms, at least 1. */
  timeoutMs: number
  /** Bytes of an answer read at most, at least 1024. */
  maxResponseBytes: number
  /** How long a batch in flight may still finish after the stop signal, ms. */
  graceMs: number
  /** First back-off delay, ms, at least 1. */
  baseMs: number
  /** Longest back-off delay, ms, at least `baseMs`. */
  capMs: number
  /** Longest back-off delay while the endpoint is refused, ms, at least `capMs`. */
  endpointCapMs: number
  /** Random source for jitter. */
  random: () => number
  /** Sleeps; resolves early when the signal fires. */
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>
  /** The clock, epoch ms. */
  now: () => number
  /** Receives what happened. */
  onEvent: (event: UploadEvent) => void
}

/** Sleeps `ms`, or until `signal` fires; never rejects. */
const defaultSleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal?.aborted) {
      resolve()
      return
    }
    const timer = setTimeout(done, ms)
    function done() {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })

/**
 * Applies the defaults and bounds to the options of an uploader and checks its endpoint.
 *
 * @param options - the caller's options.
 * @returns the settings the uploader runs with.
 * @throws EdgeTokenError `ERR_INSECURE_URL` for a plain-http endpoint that is not loopback.
 */
export function uploaderSettings(options: UploaderOptions): UploaderSettings {
  const url = assertSecureUrl(options.endpoint, 'telemetry.endpoint')
  const baseMs = Math.max(1, options.backoffBaseMs ?? 1000)
  const capMs = Math.max(baseMs, options.backoffCapMs ?? 300_000)
  return {
    url,
    maxRecords: Math.max(1, Math.floor(options.batchMaxRecords ?? 500)),
    maxBytes: Math.max(1024, Math.floor(options.batchMaxBytes ?? 512 * 1024)),
    lingerMs: Math.max(0, options.lingerMs ?? 1000),
    timeoutMs: Math.max(1, options.requestTimeoutMs ?? 30_000),
    maxResponseBytes: Math.max(1024, Math.floor(options.maxResponseBytes ?? 64 * 1024)),
    graceMs: Math.max(0, options.shutdownGraceMs ?? 5000),
    baseMs,
    capMs,
    endpointCapMs: Math.max(capMs, options.endpointBackoffCapMs ?? 3_600_000),
    random: options.random ?? Math.random,
    sleep: options.sleep ?? defaultSleep,
    now: options.now ?? Date.now,
    onEvent: options.onEvent ?? (() => {}),
  }
}
