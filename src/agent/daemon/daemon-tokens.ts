/**
 * The daemon's tokens: its one way to get an access token (silent acquisition from the store,
 * refreshing through the injected callback, the same way `edgetoken token` does), and the
 * renewer that keeps the stored token fresh, wired to the daemon's log and events.
 *
 * Separate from the daemon so that the uploader and the renewer are seen to share one acquisition
 * path, and so that the renewal reporting (what counts as a renewal, when a failure is worth a
 * warning) sits next to the renewer it reports on. Every token request is reported the same way,
 * whoever made it: the renewer's, and the uploader's after the API answered 401 (a `renewed`
 * event, a debug line, one more in the renewal count).
 *
 * @packageDocumentation
 */
import { UnavailableError } from '../../errors.js'
import { isoSeconds } from '../../lib/time.js'
import type {
  AccountIdentity,
  AcquireTokenSilentOptions,
  MachineAcquisition,
  RefreshFunction,
  SilentTokenResult,
} from '../../store/cache.js'
import type { TokenStore } from '../../store/token-store.js'
import { createRenewer, type Renewer } from '../renewer.js'
import { type DaemonOutput, errorText } from './daemon-output.js'

/**
 * What a refresh asks for besides the scopes (issue 13): an API's claims challenge, and the
 * client's capabilities (`xms_cc`), sent merged as the `claims` parameter.
 *
 * @see https://learn.microsoft.com/entra/identity-platform/claims-challenge
 */
export interface DaemonRefreshClaims {
  /** A claims request (compact JSON, already checked), e.g. an API's claims challenge. */
  readonly claims?: string | undefined
  /** Client capabilities (`cp1`), from the `clientCapabilities` config key. */
  readonly clientCapabilities?: readonly string[] | undefined
}

/** Builds the refresh grant for an authority and client (the CLI's `refreshFor`; agent/ does not import cli/). */
export type RefreshFor = (
  authority: string,
  clientId: string,
  store: TokenStore,
  signal: AbortSignal | undefined,
  claims?: DaemonRefreshClaims,
) => RefreshFunction

/** Options of {@link createDaemonTokens}. */
export interface DaemonTokensOptions {
  /** The opened token store. */
  store: TokenStore
  /** Which account, and the scopes to ask for. */
  identity: AccountIdentity & { readonly scopes: readonly string[] }
  /** Silent acquisition (the token cache's `acquireTokenSilent`, loaded lazily by the daemon). */
  acquireTokenSilent: (store: TokenStore, options: AcquireTokenSilentOptions) => Promise<SilentTokenResult>
  /** The refresh grant's builder. */
  refreshFor: RefreshFor
  /**
   * Client capabilities (`cp1`, config `clientCapabilities`): sent with every refresh, the
   * renewer's and the uploader's, so the IdP issues tokens an API may challenge (CAE).
   */
  clientCapabilities?: readonly string[] | undefined
  /** A machine's own acquisition (client credentials, managed identity) instead of refreshes. */
  machineFor?:
    | ((store: TokenStore, signal: AbortSignal | undefined) => MachineAcquisition | undefined)
    | undefined
  /** The daemon's stop signal: aborts acquisitions in flight. */
  signal: AbortSignal
  /** Renewal timing (tests, and fleets that want a wider window). */
  renewal?: { marginMs?: number; jitterMs?: number } | undefined
  /** Log, warnings and events. */
  output: DaemonOutput
  /** The refresh token is dead: renewal has stopped until the renewer is started again. */
  onSigninRequired: (reason: string) => void
}

/** What {@link createDaemonTokens} returns. */
export interface DaemonTokens {
  /**
   * An access token from the store, refreshed when stale or when forced.
   *
   * @param forceRefresh - refresh even when the cached token is still valid.
   * @param signal - stops waiting; default the daemon's stop signal.
   * @param claims - an API's claims challenge (compact JSON, checked): always refreshes, asking
   *   for these claims (with the client capabilities).
   * @returns the token and its expiry.
   * @throws EdgeTokenError `ERR_SIGNIN_REQUIRED` when no refresh is possible (or the claims need a
   *   new sign-in); others from the store, the lock or the token endpoint.
   * @see https://learn.microsoft.com/entra/identity-platform/claims-challenge
   */
  getToken(forceRefresh: boolean, signal?: AbortSignal, claims?: string): Promise<SilentTokenResult>
  /** The renewer; not started (the daemon starts it once it knows an account is signed in). */
  readonly renewer: Renewer
  /** Token requests made (by the renewer, or for the uploader after a 401); cached reads do not count. */
  readonly renewals: number
}

/**
 * Wires token acquisition and renewal for the daemon.
 *
 * @param options - store, identity, the acquisition and refresh functions, signal and output.
 * @returns the token getter, the (stopped) renewer and its renewal count.
 */
export function createDaemonTokens(options: DaemonTokensOptions): DaemonTokens {
  const { store, identity, signal, output } = options
  const { log, warn, emit } = output
  let renewals = 0
  // The renewer's last call was its unforced first one (at start, after a sign-in): a cached
  // token then is news worth a line; later it only means another caller refreshed first.
  let firstSinceStart = false

  const acquire = (
    forceRefresh: boolean,
    tokenSignal: AbortSignal,
    claims?: string,
    defer?: () => never,
  ): Promise<SilentTokenResult> => {
    const machine = options.machineFor?.(store, tokenSignal)
    return options.acquireTokenSilent(store, {
      authority: identity.authority,
      clientId: identity.clientId,
      scopes: identity.scopes,
      // A claims challenge is met only by a token the authorization server issues now.
      forceRefresh: forceRefresh || claims !== undefined,
      signal: tokenSignal,
      refresh:
        defer ??
        options.refreshFor(identity.authority, identity.clientId, store, tokenSignal, {
          claims,
          clientCapabilities: options.clientCapabilities,
        }),
      machine: machine && defer ? { grant: machine.grant, acquire: defer } : machine,
    })
  }

  /** One line and one event per token request, whoever asked for it. */
  const reportRenewal = (expiresAt: number, nextAt: number | undefined): void => {
    renewals += 1
    const next = nextAt === undefined ? '' : `, next renewal ${isoSeconds(nextAt)}`
    output.debug(`edgetoken: renewed the access token; expires ${isoSeconds(expiresAt)}${next}`)
    emit({
      event: 'renewed',
      expires_at: isoSeconds(expiresAt),
      ...(nextAt === undefined ? {} : { next_renewal_at: isoSeconds(nextAt) }),
    })
  }

  const renewer = createRenewer({
    renew: async (force, renewSignal) => {
      firstSinceStart = !force
      const result = await acquire(force, AbortSignal.any([signal, renewSignal]))
      return { expiresAt: result.expiresAt, fromCache: result.fromCache }
    },
    ...(options.renewal?.marginMs === undefined ? {} : { marginMs: options.renewal.marginMs }),
    ...(options.renewal?.jitterMs === undefined ? {} : { jitterMs: options.renewal.jitterMs }),
    onRenewed: (result, nextAt) => {
      if (!result.fromCache) {
        reportRenewal(result.expiresAt, nextAt)
        return
      }
      const line = `edgetoken: access token valid until ${isoSeconds(result.expiresAt)}; next renewal ${isoSeconds(nextAt)}`
      if (firstSinceStart) log(line)
      else output.debug(line)
    },
    onRetry: (err, ms) => {
      if (!signal.aborted)
        warn(`token renewal failed (${errorText(err)}); retrying in ${Math.ceil(ms / 1000)} s`)
    },
    onSigninRequired: (err) => options.onSigninRequired(errorText(err)),
  })

  // The uploader's way in: a refresh it causes (a 401, or a token gone stale before the renewer
  // got to it) is a renewal like the renewer's own, and is reported as one.
  const getToken = async (
    forceRefresh: boolean,
    tokenSignal: AbortSignal = signal,
    claims?: string,
  ): Promise<SilentTokenResult> => {
    // While the renewer is retrying a failed renewal (the IdP is down), the uploader does not send
    // refreshes of its own: a fleet's token requests stay one loop per device, and after an outage
    // they come back spread by the renewers' back-off (issue 17). A token still valid is used; a
    // 401 or a claims challenge still refreshes at once.
    const retryAt = renewer.retryAt
    const defer =
      retryAt === undefined || forceRefresh || claims !== undefined
        ? undefined
        : (): never => {
            throw new UnavailableError(
              'the access token is due and its renewal failed; waiting for the next renewal attempt',
              { retryAfterSeconds: Math.max(1, Math.ceil((retryAt - Date.now()) / 1000)) },
            )
          }
    const result = await acquire(forceRefresh, tokenSignal, claims, defer)
    if (!result.fromCache) reportRenewal(result.expiresAt, renewer.renewedElsewhere(result.expiresAt))
    return result
  }

  return {
    getToken,
    renewer,
    get renewals() {
      return renewals
    },
  }
}
