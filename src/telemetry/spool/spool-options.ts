/**
 * The options of a spool, their defaults and their bounds: how big the spool and its segments
 * are, and how long the reader waits for another uploader.
 *
 * Separate from the spool so the sizing policy (an SD card's worth by default, segments small
 * enough to drop in pieces) is in one place and checked once, before any file is touched.
 *
 * @internal
 */
import { EdgeTokenError } from '../../errors.js'
import type { SpoolIo } from './segment-log.js'

/** Default bound of the spool on disk: 64 MiB, sized for an SD card. */
export const DEFAULT_SPOOL_MAX_BYTES = 64 * 1024 * 1024

/** Options of `openSpool`. */
export interface OpenSpoolOptions {
  /** The bound on disk, bytes. Default {@link DEFAULT_SPOOL_MAX_BYTES} (64 MiB); at least 64 KiB. */
  maxBytes?: number
  /** Size at which a new segment is started. Default maxBytes/16, between 64 KiB and 4 MiB. */
  segmentBytes?: number
  /** The file writes (tests inject failures). */
  io?: SpoolIo
  /**
   * How long reading batches waits for another process's upload lock (`edgetoken upload` while the
   * daemon delivers), ms. Default 0: fail at once with `ERR_BUSY`.
   */
  uploadLockWaitMs?: number
  /** Stops waiting for the upload lock (`ERR_CANCELLED`). */
  signal?: AbortSignal | undefined
  /**
   * Receives one line when a damaged segment was repaired (records lost, where the copy is).
   * Default `process.emitWarning` (code `EDGETOKEN_SPOOL`).
   */
  onWarning?: ((line: string) => void) | undefined
}

/** {@link OpenSpoolOptions} with the defaults applied. */
export interface SpoolSettings {
  /** The bound on disk, bytes. */
  maxBytes: number
  /** Size at which a new segment is started. */
  segmentBytes: number
  /** The file writes, when injected. */
  io: SpoolIo | undefined
  /** How long reading batches waits for the upload lock, ms (0: not at all). */
  uploadLockWaitMs: number
  /** Stops waiting for the upload lock. */
  signal: AbortSignal | undefined
  /** Receives the repair warnings, when given. */
  onWarning: ((line: string) => void) | undefined
}

/** The smallest accepted bound, bytes: as large as the smallest default segment. */
const MIN_SPOOL_BYTES = 64 * 1024

/**
 * Applies the defaults to the options of a spool and checks the size bound.
 *
 * @param options - the caller's options.
 * @returns the settings to open the spool with.
 * @throws EdgeTokenError `ERR_CONFIG` when `maxBytes` is not an integer of at least 64 KiB.
 */
export function spoolSettings(options: OpenSpoolOptions): SpoolSettings {
  const maxBytes = options.maxBytes ?? DEFAULT_SPOOL_MAX_BYTES
  if (!Number.isSafeInteger(maxBytes) || maxBytes < MIN_SPOOL_BYTES) {
    throw new EdgeTokenError('ERR_CONFIG', `spool size bound must be an integer >= ${MIN_SPOOL_BYTES} bytes`)
  }
  return {
    maxBytes,
    segmentBytes:
      options.segmentBytes ?? Math.min(4 * 1024 * 1024, Math.max(64 * 1024, Math.floor(maxBytes / 16))),
    io: options.io,
    uploadLockWaitMs: Math.max(0, options.uploadLockWaitMs ?? 0),
    signal: options.signal,
    onWarning: options.onWarning,
  }
}
