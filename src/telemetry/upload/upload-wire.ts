/**
 * The wire form of one spool batch: its `batch_id`, the JSON body and the request headers, with
 * the `Idempotency-Key` that lets the API drop a batch re-sent after a crash.
 *
 * Separate from the uploader so the contract with the API is in one place: a re-sent batch must
 * be byte-for-byte the same request, whatever the retry or token logic around it does.
 *
 * @see ../shared/CONTRACT.md "Telemetry wire format"
 * @internal
 */
import { VERSION } from '../../version.js'
import type { SpoolBatch } from '../spool/spool.js'

/**
 * The wire `batch_id` (and `Idempotency-Key`) of a spool batch: stable across re-sends, because
 * the spool key is declared before the batch is sent.
 *
 * @param deviceId - this device's id.
 * @param batch - the batch.
 * @returns `<deviceId>.<spool key>`.
 */
export function wireBatchId(deviceId: string, batch: Pick<SpoolBatch, 'key'>): string {
  return `${deviceId}.${batch.key}`
}

/**
 * The request body of a batch.
 *
 * @param deviceId - this device's id.
 * @param batchId - the batch's {@link wireBatchId}.
 * @param batch - the batch (its records are JSON texts already).
 * @returns `{"device_id","batch_id","seq","records"}` as JSON.
 */
export function wireBody(
  deviceId: string,
  batchId: string,
  batch: Pick<SpoolBatch, 'seq' | 'records'>,
): string {
  // The records are already JSON texts: spliced in as they are, not parsed and serialised again.
  return `{"device_id":${JSON.stringify(deviceId)},"batch_id":${JSON.stringify(batchId)},"seq":${batch.seq},"records":[${batch.records.join(',')}]}`
}

/**
 * The request headers of a batch.
 *
 * @param token - the access token (secret; only ever placed in this header).
 * @param batchId - the batch's {@link wireBatchId}, sent as `Idempotency-Key`.
 * @param scheme - `Bearer` (RFC 6750 §2.1), or `DPoP` for a DPoP-bound token (RFC 9449 §7.1;
 *   the caller adds the `DPoP` proof header). Default `Bearer`.
 * @returns the headers of the POST.
 */
export function wireHeaders(
  token: string,
  batchId: string,
  scheme: 'Bearer' | 'DPoP' = 'Bearer',
): Record<string, string> {
  return {
    'content-type': 'application/json',
    accept: 'application/json',
    'user-agent': `edgetoken/${VERSION}`,
    authorization: `${scheme} ${token}`,
    'idempotency-key': batchId,
  }
}
