/**
 * Managed identity on an Azure virtual machine: the instance metadata service (IMDS) at
 * `169.254.169.254`, and the response checks every managed identity source shares.
 *
 * Facts from Microsoft's documentation and MSAL Python's `msal/managed_identity.py`
 * (`_obtain_token_on_azure_vm`): `GET http://169.254.169.254/metadata/identity/oauth2/token` with
 * `api-version=2018-02-01`, `resource`, `client_id` for a user-assigned identity and the header
 * `Metadata: true`; `AZURE_POD_IDENTITY_AUTHORITY_HOST` replaces the host (AAD Pod Identity, and
 * how our tests point it at loopback). The answer carries `expires_in` and `expires_on` as strings
 * of digits. IMDS is link-local: it is never reached through a proxy (lib/http/http-agent.ts).
 *
 * @see https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token
 * @packageDocumentation
 */
import { EdgeTokenError, InvalidResponseError, OAuthServerError, UnavailableError } from '../errors.js'
import { parseRetryAfter } from '../lib/http/retry-after.js'
import { isNonEmptyString, isObject } from '../lib/validate.js'
import { type HttpResponse, httpRequest, readJson, responseHeader } from '../oauth/http.js'
import type { TokenSet } from '../oauth/types.js'

/** The IMDS host of every Azure VM (link-local, RFC 3927). */
export const IMDS_DEFAULT_HOST = 'http://169.254.169.254'
/** The IMDS token path. */
export const IMDS_TOKEN_PATH = '/metadata/identity/oauth2/token'
/** The api-version MSAL sends to IMDS. */
export const IMDS_API_VERSION = '2018-02-01'

/** Options of {@link processManagedIdentityResponse}. */
export interface ManagedIdentityResponseOptions {
  /** The resource asked for (the granted "scope" when the answer names none). */
  resource: string
  /** The clock, epoch ms. */
  now: () => number
  /** The service, for messages. */
  service: string
  /**
   * Statuses besides 429 and 5xx that mean "try again": IMDS documents 404 (while it is
   * updating) and 410 (for up to 70 s after the VM starts) as retryable.
   */
  retryStatuses?: readonly number[] | undefined
}

/** Seconds, sent as a number or a string of digits (IMDS and Arc send strings). */
function seconds(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return value
  if (typeof value === 'string' && /^\d{1,12}$/.test(value)) return Number(value)
  return undefined
}

/**
 * Checks a managed identity token response and turns it into a {@link TokenSet}: the token, and
 * its expiry from `expires_in` (relative, so a skewed clock does not matter), else from
 * `expires_on` (epoch seconds, a number or a string of digits). There is no refresh token.
 *
 * @param response - the HTTP response.
 * @param options - resource, clock, service name, retryable statuses.
 * @returns the token set, `scopes` = `[resource]`, and `refreshInSeconds` half the lifetime for
 *   tokens of two hours or more (as MSAL does, so a long token is renewed early).
 * @throws UnavailableError (retryable) for 429, 5xx and `retryStatuses`, with `Retry-After`;
 *   OAuthServerError `ERR_CONFIG` for another error answer (identity not found, bad resource);
 *   InvalidResponseError for a malformed success.
 */
export function processManagedIdentityResponse(
  response: HttpResponse,
  options: ManagedIdentityResponseOptions,
): TokenSet {
  const { status } = response
  if (status === 429 || status >= 500 || options.retryStatuses?.includes(status)) {
    const retryAfterSeconds = parseRetryAfter(responseHeader(response, 'retry-after'), options.now())
    throw new UnavailableError(`${options.service} answered ${status}`, { status, retryAfterSeconds })
  }
  if (status !== 200) {
    let body: unknown
    try {
      body = readJson(response, `${options.service} error`)
    } catch {
      body = undefined
    }
    const error = isObject(body) && isNonEmptyString(body.error) ? body.error : `http_${status}`
    const description =
      isObject(body) && typeof body.error_description === 'string' ? body.error_description : undefined
    throw new OAuthServerError('ERR_CONFIG', error, {
      status,
      errorDescription: description,
      body,
      message: `${options.service} answered ${status} ${error.replace(/[^\x20-\x7e]/g, '').slice(0, 80)}${
        description ? `: ${description.replace(/[^\x20-\x7e]+/g, ' ').slice(0, 200)}` : ''
      }`,
    })
  }
  const body = readJson(response, `${options.service} token response`)
  const bad = (what: string) =>
    new InvalidResponseError(`${options.service} token response: ${what}`, { status, body })
  if (!isObject(body)) throw bad('not a JSON object')
  if (!isNonEmptyString(body.access_token)) throw bad('access_token is missing')
  const tokenType = body.token_type === undefined ? 'bearer' : body.token_type
  if (!isNonEmptyString(tokenType)) throw bad('token_type is not a string')
  const now = options.now()
  const expiresIn = seconds(body.expires_in)
  const expiresOn = seconds(body.expires_on)
  let expiresAt: number
  if (expiresIn !== undefined) expiresAt = now + expiresIn * 1000
  else if (expiresOn !== undefined) expiresAt = expiresOn * 1000
  else throw bad('expires_in and expires_on are both missing or not whole seconds')
  if (expiresAt <= now) throw bad('the token is already expired')
  const lifetimeSeconds = Math.floor((expiresAt - now) / 1000)
  const resource = isNonEmptyString(body.resource) ? body.resource : options.resource
  return Object.freeze({
    accessToken: body.access_token,
    tokenType: tokenType.toLowerCase(),
    expiresAt,
    scopes: Object.freeze([resource]),
    // MSAL Python: "if 'refresh_in' not in result and expires_in >= 7200: refresh_in = expires_in / 2".
    ...(lifetimeSeconds >= 7200 ? { refreshInSeconds: Math.floor(lifetimeSeconds / 2) } : {}),
  })
}

/** Options of {@link requestImdsToken}. */
export interface ImdsTokenOptions {
  /** The resource (audience) of the token, e.g. `https://management.azure.com`. */
  resource: string
  /** A user-assigned identity's client id; default the system-assigned identity. */
  clientId?: string | undefined
  /** The environment (`AZURE_POD_IDENTITY_AUTHORITY_HOST`). */
  env: NodeJS.ProcessEnv
  /** Per-request timeout, ms. */
  timeoutMs?: number | undefined
  /** Cancels the request. */
  signal?: AbortSignal | undefined
  /** The clock, epoch ms. */
  now: () => number
}

/**
 * The IMDS token URL: `AZURE_POD_IDENTITY_AUTHORITY_HOST` (as MSAL reads it), else
 * `http://169.254.169.254`, plus the token path.
 *
 * @param env - the environment.
 * @returns the URL without query.
 * @throws EdgeTokenError `ERR_CONFIG` when the variable is not an http(s) URL.
 */
export function imdsTokenUrl(env: NodeJS.ProcessEnv): URL {
  const host = (env.AZURE_POD_IDENTITY_AUTHORITY_HOST || IMDS_DEFAULT_HOST).replace(/\/+$/, '')
  let url: URL
  try {
    url = new URL(`${host}${IMDS_TOKEN_PATH}`)
  } catch {
    throw new EdgeTokenError('ERR_CONFIG', 'AZURE_POD_IDENTITY_AUTHORITY_HOST is not a URL')
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password) {
    throw new EdgeTokenError('ERR_CONFIG', 'AZURE_POD_IDENTITY_AUTHORITY_HOST must be an http(s) URL')
  }
  return url
}

/**
 * One token request to the instance metadata service.
 *
 * @param options - resource, user-assigned client id, environment, timeout, signal, clock.
 * @returns the token set.
 * @throws as {@link processManagedIdentityResponse}; NetworkError (`ERR_UNAVAILABLE`) when IMDS
 *   cannot be reached (not an Azure VM).
 * @see https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token#get-a-token-using-http
 */
export async function requestImdsToken(options: ImdsTokenOptions): Promise<TokenSet> {
  const url = imdsTokenUrl(options.env)
  url.searchParams.set('api-version', IMDS_API_VERSION)
  url.searchParams.set('resource', options.resource)
  if (options.clientId !== undefined) url.searchParams.set('client_id', options.clientId)
  const service = 'the Azure instance metadata service'
  const response = await httpRequest(url, {
    // Required by IMDS: a request without it (a server-side request forgery) is refused.
    headers: { metadata: 'true' },
    timeoutMs: options.timeoutMs,
    signal: options.signal,
    service: { name: service, setting: 'managedIdentity' },
  })
  return processManagedIdentityResponse(response, {
    resource: options.resource,
    now: options.now,
    service,
    retryStatuses: [404, 410],
  })
}
