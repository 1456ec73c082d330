/**
 * Managed identity on an Azure Arc-enabled server: the local identity endpoint of the Connected
 * Machine agent (`himds`), which proves that the caller may read a root-owned file.
 *
 * The flow (Microsoft's "Authenticate against Azure resources with Azure Arc-enabled servers",
 * and MSAL Python's `msal/managed_identity.py` `_obtain_token_on_arc`):
 * 1. `GET $IDENTITY_ENDPOINT?api-version=2020-06-01&resource=…` with `Metadata: true`;
 * 2. the agent answers 401 with `WWW-Authenticate: Basic realm=<path>`, the path of a fresh
 *    `.key` file under `/var/opt/azcmagent/tokens/` readable by the `himds` group;
 * 3. the same request again with `Authorization: Basic <the file's content>`.
 * MSAL checks the size before reading ("Local key file shall not be larger than 4KB").
 *
 * The realm comes from whoever answers on the endpoint, and edgetoken may run as root: a realm
 * pointing elsewhere (`/etc/shadow`, a symbolic link planted in the directory, a FIFO, a huge file)
 * would make us read, or send, a file of the attacker's choice. So the path must be a regular file
 * with the `.key` extension directly in the trusted directory, at most 4096 bytes, checked with
 * `lstat` before opening, then opened with `O_NOFOLLOW | O_NONBLOCK` and checked again on the open
 * descriptor (same file, still regular, still small) before one bounded read. Anything else is
 * refused without reading it.
 *
 * @see https://learn.microsoft.com/azure/azure-arc/servers/managed-identity-authentication
 * @packageDocumentation
 */
import { constants } from 'node:fs'
import { lstat, open } from 'node:fs/promises'
import { basename, dirname, extname, isAbsolute, normalize } from 'node:path'
import { EdgeTokenError, InvalidResponseError, UnavailableError } from '../errors.js'
import { parseRetryAfter } from '../lib/http/retry-after.js'
import { isLoopbackHost } from '../lib/url.js'
import { httpRequest, responseHeader } from '../oauth/http.js'
import type { TokenSet } from '../oauth/types.js'
import { processManagedIdentityResponse } from './managed-identity-imds.js'

/** Where the Arc agent writes challenge files on Linux (MSAL Python: `/var/opt/azcmagent/tokens`). */
export const ARC_TOKEN_DIRECTORY = '/var/opt/azcmagent/tokens'
/** The largest challenge file read, bytes (MSAL Python refuses files over 4 KB). */
export const ARC_MAX_KEY_BYTES = 4096
/** The api-version of the Arc identity endpoint. */
export const ARC_API_VERSION = '2020-06-01'

const SERVICE = 'the Azure Arc identity endpoint'

/**
 * The challenge file named by the Arc endpoint was refused (exit 5 in the CLI): not retried, as
 * the same endpoint would name the same file.
 */
export class ArcChallengeError extends UnavailableError {
  /** Never retried. */
  readonly retryable = false
}

/** Whether the environment is an Arc-enabled server: both variables set, as MSAL checks. */
export function isArcEnvironment(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env.IDENTITY_ENDPOINT) && Boolean(env.IMDS_ENDPOINT)
}

/**
 * The Arc identity endpoint from `IDENTITY_ENDPOINT`: https, or http to a loopback host only
 * (the agent listens on `localhost:40342`), since the challenge file's content is sent to it.
 *
 * @param env - the environment.
 * @returns the URL.
 * @throws EdgeTokenError `ERR_CONFIG` for anything else.
 */
export function arcEndpoint(env: NodeJS.ProcessEnv): URL {
  let url: URL | undefined
  try {
    url = new URL(env.IDENTITY_ENDPOINT ?? '')
  } catch {
    url = undefined
  }
  const ok =
    url !== undefined &&
    !url.username &&
    !url.password &&
    (url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname)))
  if (!ok || url === undefined) {
    throw new EdgeTokenError(
      'ERR_CONFIG',
      'IDENTITY_ENDPOINT must be an https URL, or http to a loopback host (the Arc agent: http://localhost:40342/...)',
    )
  }
  return url
}

function shown(path: string): string {
  return JSON.stringify(path.replace(/[^\x20-\x7e]/g, '?').slice(0, 200))
}

function refuse(path: string, why: string): never {
  throw new ArcChallengeError(
    `${SERVICE} named the challenge file ${shown(path)}, ${why}: refused without reading it ` +
      `(only a regular .key file of at most ${ARC_MAX_KEY_BYTES} bytes directly in ${ARC_TOKEN_DIRECTORY}/ is read)`,
  )
}

/**
 * Reads an Arc challenge file after checking it is what the agent writes: a regular `.key` file
 * directly in `directory`, at most 4096 bytes; the checks are made before the file is opened and
 * again on the open descriptor.
 *
 * @param path - the path from `WWW-Authenticate: Basic realm=`.
 * @param directory - the trusted directory. Default {@link ARC_TOKEN_DIRECTORY}; only tests
 *   change it.
 * @returns the file's content, trimmed. Secret.
 * @throws {@link ArcChallengeError} naming what was wrong, having read nothing.
 */
export async function readArcChallengeFile(path: string, directory = ARC_TOKEN_DIRECTORY): Promise<string> {
  if (!isAbsolute(path) || normalize(path) !== path) refuse(path, 'which is not an absolute, normal path')
  if (dirname(path) !== directory.replace(/\/+$/, '')) refuse(path, `which is outside ${directory}/`)
  if (extname(path) !== '.key' || basename(path) === '.key') refuse(path, 'which is not a .key file')
  let before: Awaited<ReturnType<typeof lstat>>
  try {
    before = await lstat(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    throw new ArcChallengeError(
      `${SERVICE} named the challenge file ${shown(path)}, which cannot be read (${code})`,
      {
        cause: err,
      },
    )
  }
  if (before.isSymbolicLink()) refuse(path, 'which is a symbolic link')
  if (!before.isFile()) refuse(path, 'which is not a regular file')
  if (before.size > ARC_MAX_KEY_BYTES) refuse(path, `which is larger than ${ARC_MAX_KEY_BYTES} bytes`)
  let handle: Awaited<ReturnType<typeof open>>
  try {
    // O_NOFOLLOW: a link swapped in after the lstat fails here; O_NONBLOCK: a FIFO cannot hang us.
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    if (code === 'ELOOP') refuse(path, 'which is a symbolic link')
    throw new ArcChallengeError(
      `${SERVICE} named the challenge file ${shown(path)}, which cannot be opened (${code})`,
      {
        cause: err,
      },
    )
  }
  try {
    const after = await handle.stat()
    if (!after.isFile() || after.ino !== before.ino || after.dev !== before.dev) {
      refuse(path, 'which was replaced while being checked')
    }
    if (after.size > ARC_MAX_KEY_BYTES) refuse(path, `which is larger than ${ARC_MAX_KEY_BYTES} bytes`)
    const buffer = Buffer.alloc(ARC_MAX_KEY_BYTES + 1)
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0)
    // Grown since the stat: the extra byte shows it, and nothing of it is used.
    if (bytesRead > ARC_MAX_KEY_BYTES) refuse(path, `which is larger than ${ARC_MAX_KEY_BYTES} bytes`)
    const secret = buffer.subarray(0, bytesRead).toString('utf8').trim()
    buffer.fill(0)
    if (secret.length === 0 || !/^[\x21-\x7e]+$/.test(secret)) {
      throw new ArcChallengeError(
        `${SERVICE}: the challenge file ${shown(path)} does not hold a printable key`,
      )
    }
    return secret
  } finally {
    await handle.close()
  }
}

/**
 * The path of an RFC 7617 `Basic realm=` challenge (quoted or not), as the Arc agent sends it.
 *
 * @param header - the `WWW-Authenticate` value.
 * @returns the realm, or undefined when the header is not a Basic challenge with a realm.
 * @see https://www.rfc-editor.org/rfc/rfc7617#section-2
 */
export function basicRealm(header: string | undefined): string | undefined {
  const match = /^\s*Basic\s+realm=(?:"([^"]*)"|([^\s,]+))\s*$/i.exec(header ?? '')
  return match ? (match[1] ?? match[2]) : undefined
}

/** Options of {@link requestArcToken}. */
export interface ArcTokenOptions {
  /** The resource (audience) of the token. */
  resource: string
  /** The environment (`IDENTITY_ENDPOINT`). */
  env: NodeJS.ProcessEnv
  /** The trusted challenge directory; only tests change it. Default {@link ARC_TOKEN_DIRECTORY}. */
  tokenDirectory?: string | undefined
  /** Per-request timeout, ms. */
  timeoutMs?: number | undefined
  /** Cancels the requests. */
  signal?: AbortSignal | undefined
  /** The clock, epoch ms. */
  now: () => number
}

/**
 * One token acquisition from the Arc identity endpoint: the unauthenticated request, the
 * challenge file, the authenticated request.
 *
 * @param options - resource, environment, trusted directory, timeout, signal, clock.
 * @returns the token set.
 * @throws {@link ArcChallengeError} for a refused challenge file; UnavailableError for 429/5xx
 *   (retryable); InvalidResponseError for an answer that is no challenge.
 * @see https://learn.microsoft.com/azure/azure-arc/servers/managed-identity-authentication
 */
export async function requestArcToken(options: ArcTokenOptions): Promise<TokenSet> {
  const url = arcEndpoint(options.env)
  url.searchParams.set('api-version', ARC_API_VERSION)
  url.searchParams.set('resource', options.resource)
  const common = {
    timeoutMs: options.timeoutMs,
    signal: options.signal,
    service: { name: SERVICE, setting: 'IDENTITY_ENDPOINT' },
  }
  const process = { resource: options.resource, now: options.now, service: SERVICE }
  const first = await httpRequest(url, { ...common, headers: { metadata: 'true' } })
  if (first.status !== 401) {
    if (first.status === 429 || first.status >= 500) {
      const retryAfterSeconds = parseRetryAfter(responseHeader(first, 'retry-after'), options.now())
      throw new UnavailableError(`${SERVICE} answered ${first.status}`, {
        status: first.status,
        retryAfterSeconds,
      })
    }
    throw new InvalidResponseError(
      `${SERVICE} answered ${first.status}, not the 401 challenge it sends first`,
      {
        status: first.status,
      },
    )
  }
  const realm = basicRealm(responseHeader(first, 'www-authenticate'))
  if (realm === undefined) {
    throw new InvalidResponseError(
      `${SERVICE} answered 401 without a 'WWW-Authenticate: Basic realm=' challenge`,
      {
        status: 401,
      },
    )
  }
  const secret = await readArcChallengeFile(realm, options.tokenDirectory)
  const second = await httpRequest(url, {
    ...common,
    headers: { metadata: 'true', authorization: `Basic ${secret}` },
  })
  return processManagedIdentityResponse(second, process)
}
