/**
 * The uploader's entry in the spool state (`lastUpload`, shown by `edgetoken status`): how an
 * upload ended, and which error maps to which result.
 *
 * Separate from the uploader because it is what a person reads to find out why nothing arrives:
 * the mapping from errors to `signin_required`, `captive_portal` or `unavailable` is kept apart
 * from the code that raises them, and the entry holds one clean line, never server text as is.
 *
 * @internal
 */
import { EdgeTokenError, InvalidResponseError } from '../../errors.js'
import { isoSeconds } from '../../lib/time.js'
import type { LastUpload } from '../spool/spool-status.js'
import { serverLine } from './upload-outcome.js'

/**
 * The result of an upload that stopped on an error.
 *
 * @param err - what stopped it (the uploader's or the token source's error).
 * @returns the result and a one-line message.
 */
export function failureResult(err: unknown): Omit<LastUpload, 'at'> {
  const message = err instanceof Error ? serverLine(err.message) : 'error'
  if (err instanceof EdgeTokenError) {
    if (err.code === 'ERR_SIGNIN_REQUIRED') return { result: 'signin_required', message }
    if (err instanceof InvalidResponseError) return { result: 'captive_portal', message }
    if (err.category === 'unavailable') return { result: 'unavailable', message }
  }
  return { result: 'error', message }
}

/**
 * The entry to record: only the fields that are known, no `undefined` keys in the spool state.
 *
 * @param result - the result, status, records delivered and message.
 * @param nowMs - the time it ended, epoch ms.
 * @returns the entry for `Spool.setLastUpload`.
 */
export function lastUploadEntry(result: Omit<LastUpload, 'at'>, nowMs: number): LastUpload {
  const clean: Omit<LastUpload, 'at'> = { result: result.result }
  if (result.status !== undefined) clean.status = result.status
  if (result.delivered !== undefined) clean.delivered = result.delivered
  if (result.message !== undefined) clean.message = result.message
  return { ...clean, at: isoSeconds(nowMs) }
}
