/**
 * The authorization server's signing keys (JWKS), fetched through our own HTTP client (proxy,
 * timeout, size cap) and handed to jose as a local key set. jose's `createRemoteJWKSet` is not
 * used: it fetches with the global `fetch`, a second copy of undici that ignores our proxy agent.
 *
 * @packageDocumentation
 */
import type { createLocalJWKSet, JSONWebKeySet, JWTVerifyGetKey } from 'jose'
import { InvalidResponseError, UnavailableError } from '../errors.js'
import { parseRetryAfter } from '../lib/http/retry-after.js'
import { isObject } from '../lib/validate.js'
import { httpRequest, readJson, responseHeader } from './http.js'

/** Minimum time between two fetches of the same JWKS triggered by an unknown `kid`, ms. */
export const JWKS_REFETCH_COOLDOWN_MS = 30_000

interface Entry {
  keys: ReturnType<typeof createLocalJWKSet>
  fetchedAt: number
}

const sets = new Map<string, Entry>()
// jose is loaded by the first id_token check, not by `import 'edgetoken'` (see oauth/http.ts).
let jose: typeof import('jose') | undefined

/** Options of {@link jwksKeyResolver}. */
export interface JwksOptions {
  /** Cancels a JWKS fetch. */
  signal?: AbortSignal | undefined
  /** The clock, epoch ms. Default `Date.now`. */
  now?: (() => number) | undefined
}

async function fetchJwks(uri: string, options: JwksOptions): Promise<Entry> {
  const response = await httpRequest(uri, { signal: options.signal })
  if (response.status === 429 || response.status >= 500) {
    // Unavailable, not invalid: the caller may try again (RFC 9110 §10.2.3 Retry-After kept).
    throw new UnavailableError(`JWKS at ${response.url.host} answered ${response.status}`, {
      status: response.status,
      retryAfterSeconds: parseRetryAfter(
        responseHeader(response, 'retry-after'),
        (options.now ?? Date.now)(),
      ),
    })
  }
  if (response.status !== 200) {
    throw new InvalidResponseError(`JWKS at ${response.url.host} answered ${response.status}`, {
      status: response.status,
    })
  }
  const doc = readJson(response, 'JWKS')
  if (!isObject(doc) || !Array.isArray(doc.keys) || !doc.keys.every(isObject)) {
    throw new InvalidResponseError(`JWKS at ${response.url.host} has no "keys" array`, { body: doc })
  }
  jose ??= await import('jose')
  const { createLocalJWKSet } = jose
  const entry = {
    keys: createLocalJWKSet(doc as unknown as JSONWebKeySet),
    fetchedAt: (options.now ?? Date.now)(),
  }
  sets.set(uri, entry)
  return entry
}

/**
 * A jose key resolver for a JWKS URI: keys are cached per URI for the life of the process, and
 * fetched again once when a token names a key we do not know (key rotation), at most once per
 * {@link JWKS_REFETCH_COOLDOWN_MS}.
 *
 * @param uri - the `jwks_uri` (already checked to be https or loopback).
 * @param options - signal and clock.
 * @returns a function for jose `jwtVerify`.
 */
export function jwksKeyResolver(uri: string, options: JwksOptions = {}): JWTVerifyGetKey {
  return async (header, token) => {
    const now = (options.now ?? Date.now)()
    let entry = sets.get(uri) ?? (await fetchJwks(uri, options))
    try {
      return await entry.keys(header, token)
    } catch (err) {
      jose ??= await import('jose')
      const unknownKey = err instanceof jose.errors.JWKSNoMatchingKey
      if (!unknownKey || now - entry.fetchedAt < JWKS_REFETCH_COOLDOWN_MS) throw err
      entry = await fetchJwks(uri, options)
      return entry.keys(header, token)
    }
  }
}

/** Forgets every cached key set (tests). */
export function clearJwksCache(): void {
  sets.clear()
}
