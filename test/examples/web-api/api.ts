/**
 * The example web API (issue 18): a `node:http` telemetry gateway. It accepts a user's telemetry
 * batch with the reference receiver (`createReceiver`: jose verification of the bearer token's
 * signature, issuer, audience, expiry and scope; body checks; `Idempotency-Key`), then forwards the
 * batch to a downstream API as the same user, with a token from
 * `ConfidentialClient.acquireTokenOnBehalfOf`: Entra ID's on-behalf-of grant, or RFC 8693 token
 * exchange elsewhere. Downstream tokens are cached per incoming token (its SHA-256), so a user's
 * next batch costs no token request.
 *
 * The receiver answers every failure of the forwarding (the on-behalf-of grant refused, the
 * downstream API down) with `500 {"error":"server_error"}` and does not remember the batch, so the
 * caller retries it with the same key; the cause is logged as its error code, never a token.
 *
 * @packageDocumentation
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ConfidentialClient } from '../../../src/index.js'
import { EdgeTokenError } from '../../../src/index.js'
import { createReceiver, type ReceivedBatch } from '../../../src/telemetry/receiver/receiver.js'

/** Options of {@link createWebApi}. */
export interface WebApiOptions {
  /** The issuer of the tokens this API accepts. */
  issuer: string
  /** This API's identifier, required in the token's `aud`. */
  audience: string
  /** The scope a caller's token must carry (`scope`, or Entra ID's `scp`). */
  requiredScope: string
  /** Where the issuer's signing keys are; default from its discovery document. */
  jwksUri?: string | undefined
  /** This API as a confidential client of the same IdP, for the on-behalf-of grant. */
  client: ConfidentialClient
  /** The downstream API: its endpoint, and the scopes (and RFC 8707 resource) to ask for. */
  downstream: { url: string; scopes: readonly string[]; resource?: string | undefined }
  /** A line for the operator (never a token). Default: stderr. */
  log?: ((line: string) => void) | undefined
}

/** A running web API handler. */
export interface WebApi {
  /** The `node:http` request listener: `POST /telemetry`. */
  handler: (req: IncomingMessage, res: ServerResponse) => void
  /** Stops accepting. */
  close(): void
}

/** The caller's token, for the batch callback of the request that carried it. */
const incoming = new AsyncLocalStorage<string>()

/**
 * Creates the web API.
 *
 * @param options - issuer, audience, scope, the confidential client and the downstream API.
 * @returns the handler.
 * @example
 * ```ts
 * const api = createWebApi({ issuer, audience: 'https://webapi.example', requiredScope: 'webapi:call', client, downstream })
 * http.createServer(api.handler).listen(4000)
 * ```
 */
export function createWebApi(options: WebApiOptions): WebApi {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`))

  const forward = async (batch: ReceivedBatch): Promise<void> => {
    const assertion = incoming.getStore()
    if (assertion === undefined) throw new Error('no caller token in this request')
    try {
      const { accessToken } = await options.client.acquireTokenOnBehalfOf({
        assertion,
        scopes: options.downstream.scopes,
        resource: options.downstream.resource,
      })
      const answer = await fetch(options.downstream.url, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${accessToken}`,
          'content-type': 'application/json',
          'idempotency-key': batch.batchId,
        },
        body: JSON.stringify({
          device_id: batch.deviceId,
          batch_id: batch.batchId,
          seq: batch.seq,
          records: batch.records,
        }),
        signal: AbortSignal.timeout(10_000),
      })
      await answer.body?.cancel()
      if (!answer.ok) throw new Error(`downstream API answered ${answer.status}`)
    } catch (err) {
      log(
        `forward for ${batch.subject}: ${err instanceof EdgeTokenError ? err.code : (err as Error).message}`,
      )
      throw err
    }
  }

  const receiver = createReceiver({
    issuer: options.issuer,
    audience: options.audience,
    requiredScope: options.requiredScope,
    ...(options.jwksUri === undefined ? {} : { jwksUri: options.jwksUri }),
    keepBatches: false,
    onBatch: forward,
  })

  return {
    handler(req, res) {
      if (new URL(req.url ?? '/', 'http://api.invalid').pathname !== '/telemetry') {
        req.resume()
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not_found"}')
        return
      }
      // Only the receiver's checks decide whether this token is used: it is read here, before them,
      // but handed to the grant only from the batch callback, which runs after they passed.
      const token = /^Bearer +(\S+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? ''
      incoming.run(token, () => receiver.handler(req, res))
    },
    close: () => receiver.close(),
  }
}
