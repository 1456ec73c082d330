/**
 * The device-code way in for `login` and the daemon's pair sign-in: the RFC 8628 flow with the
 * two things that make it survive a device's life (issue 14):
 *
 * - DPoP (RFC 9449): one key pair per account, kept in the encrypted store, chosen by the `dpop`
 *   setting and the IdP's `dpop_signing_alg_values_supported`; every poll carries a proof, so the
 *   tokens (and above all the refresh token) are bound to the key.
 * - Resume: the device code is kept (encrypted) from the moment the IdP issues it, with its expiry
 *   and the interval in force; the next `login` or `run` picks it up until it expires, so the
 *   person at the phone keeps their code across a reboot. Denied or expired: removed.
 * - Replacing (issue 11 #1): the approved sign-in is saved over whatever the store held, and the
 *   refresh token it replaced is revoked afterwards (RFC 7009), same account or another.
 *
 * @see https://www.rfc-editor.org/rfc/rfc8628
 * @see https://www.rfc-editor.org/rfc/rfc9449
 * @see https://www.rfc-editor.org/rfc/rfc7009
 * @packageDocumentation
 */
import type { DPoPSetting } from '../config/types.js'
import { isEdgeTokenError } from '../errors.js'
import type { AuthorizationServer } from '../oauth/authority.js'
import type { DPoPHandle, DPoPKeyRecord } from '../oauth/dpop.js'
import type { DeviceAuthorization, PollDeviceAuthorizationOptions } from '../oauth/grants/device.js'
import type { Account, OAuthClient, TokenSet } from '../oauth/types.js'
import type { AccountIdentity } from '../store/cache.js'
import type { TokenStore } from '../store/token-store.js'
import { dpopAlgorithm } from './dpop-key.js'
import type { RevocationReport } from './replace-sign-in.js'

/** Options of {@link prepareDeviceSignIn}. */
export interface PrepareDeviceSignInOptions {
  /** The opened token store (the pending sign-in and the DPoP key live there). */
  store: TokenStore
  /** Which account, and the scopes of the sign-in (as sent: `signInScopes`). */
  identity: AccountIdentity
  /** The scopes to ask for (already completed with `openid` and `offline_access`). */
  scopes: readonly string[]
  /** The authorization server. */
  server: AuthorizationServer
  /** The client. */
  client: OAuthClient
  /** The `dpop` setting. Default `auto`. */
  dpop?: DPoPSetting | undefined
  /** Cancels the device authorization request and the store lock waits. */
  signal?: AbortSignal | undefined
  /** Resume a pending sign-in of the account when one is stored. Default true. */
  resume?: boolean | undefined
}

/** A device sign-in ready to show and poll: started now, or resumed from the store. */
export interface PreparedDeviceSignIn {
  /** The flow (user code, URIs, expiry, interval). */
  readonly flow: DeviceAuthorization
  /** True when the flow was resumed from the store (same user code as before). */
  readonly resumed: boolean
  /** The DPoP key the polls prove, when DPoP is used. Secret. */
  readonly dpopKey: DPoPKeyRecord | undefined
  /**
   * Polls until the user approves, denies or the code expires, keeping the stored interval up to
   * date (a `slow_down` survives a restart). Any end but a cancellation (denied, expired, another
   * error of the server) removes the pending sign-in; a completed one is removed by `saveSignIn`.
   *
   * @param options - signal, sleep, clock (tests).
   * @returns the token set.
   */
  poll(options?: Pick<PollDeviceAuthorizationOptions, 'signal' | 'sleep' | 'now'>): Promise<TokenSet>
  /**
   * Forgets the pending sign-in: the person cancelled on purpose (Ctrl-C at the terminal). Not
   * called for a stop by the system (SIGTERM, a reboot): then the next start resumes it.
   */
  forget(): Promise<void>
  /**
   * Saves the approved sign-in with its DPoP key (which also drops the pending sign-in), then
   * revokes the refresh token it replaced, if the store held another one (RFC 7009 §2.1): best
   * effort, reported, never in the way of the save.
   *
   * @param options - the account and tokens from {@link PreparedDeviceSignIn.poll}, the scopes
   *   to cache the access token under, where to report the revocation, a signal for the lock.
   * @returns when saved and the revocation attempted.
   * @see https://www.rfc-editor.org/rfc/rfc7009#section-2.1
   */
  save(options: SaveDeviceSignInOptions): Promise<void>
}

/** Options of {@link PreparedDeviceSignIn.save}. */
export interface SaveDeviceSignInOptions extends RevocationReport {
  /** The signed-in account. */
  account: Account
  /** The token response of the sign-in. */
  tokenSet: TokenSet
  /** The scopes that were requested (the cache key of the access token). */
  requestedScopes: readonly string[]
  /** Stops waiting for the store lock. */
  signal?: AbortSignal | undefined
}

function sameScopes(a: readonly string[], b: readonly string[]): boolean {
  const left = new Set(a)
  const right = new Set(b)
  return left.size === right.size && [...left].every((s) => right.has(s))
}

/**
 * Starts a device sign-in, or resumes the account's pending one (same server scopes, not
 * expired). A new flow is saved to the store, with its DPoP key, before it is shown: from then on
 * a crash or reboot does not lose the code.
 *
 * @param options - store, identity, scopes, server, client, `dpop` setting, signal.
 * @returns the prepared sign-in.
 * @throws as `startDeviceAuthorization`; ConfigError (`dpop`); StoreError when the store cannot
 *   be written.
 * @example
 * ```ts
 * const signIn = await prepareDeviceSignIn({ store, identity, scopes, server, client: { clientId } })
 * show(signIn.flow, signIn.resumed)
 * const tokens = await signIn.poll({ signal })
 * await signIn.save({ account: accountFromTokenSet(server, clientId, tokens), tokenSet: tokens, requestedScopes, onWarning })
 * ```
 */
export async function prepareDeviceSignIn(
  options: PrepareDeviceSignInOptions,
): Promise<PreparedDeviceSignIn> {
  const { store, identity, server, client, signal } = options
  const [device, pendingStore] = await Promise.all([
    import('../oauth/grants/device.js'),
    import('../store/pending-signin.js'),
  ])
  const setting = options.dpop ?? 'auto'
  // jose is loaded only when DPoP is used (or a key must be made).
  const dpopModule = setting === false ? undefined : await import('../oauth/dpop.js')
  const alg = dpopModule ? dpopAlgorithm(setting, server, dpopModule.chooseDPoPAlgorithm) : undefined

  let flow: DeviceAuthorization | undefined
  let dpopKey: DPoPKeyRecord | undefined
  const stored = alg === undefined ? undefined : await pendingStore.readDPoPKey(store, identity)
  // One key per account: kept across sign-ins while the server still takes its algorithm.
  if (stored !== undefined && stored.alg === alg) dpopKey = stored

  const pending = options.resume === false ? undefined : await pendingStore.readPendingSignIn(store, identity)
  if (pending !== undefined && sameScopes(pending.flow.scopes, options.scopes)) {
    try {
      flow = device.restoreDeviceAuthorization(pending.flow)
    } catch {
      flow = undefined // unreadable: start over (the write below replaces it)
    }
  }
  const resumed = flow !== undefined
  if (flow === undefined) {
    if (alg !== undefined && dpopKey === undefined) dpopKey = await dpopModule?.generateDPoPKey(alg)
    flow = await device.startDeviceAuthorization(server, client, options.scopes, { signal })
    await pendingStore.savePendingSignIn(store, identity, device.saveDeviceAuthorization(flow), dpopKey, {
      signal,
    })
  } else if (alg !== undefined && dpopKey === undefined) {
    // Resumed without a key (DPoP turned on meanwhile): bind this sign-in to a new one.
    dpopKey = await dpopModule?.generateDPoPKey(alg)
    await pendingStore.savePendingSignIn(store, identity, device.saveDeviceAuthorization(flow), dpopKey, {
      signal,
    })
  }
  const started = flow
  const deviceCode = device.saveDeviceAuthorization(started).deviceCode
  const handle: DPoPHandle | undefined =
    dpopKey === undefined || dpopModule === undefined ? undefined : await dpopModule.dpopHandle(dpopKey)

  return Object.freeze({
    flow: started,
    resumed,
    dpopKey,
    async poll(pollOptions: Pick<PollDeviceAuthorizationOptions, 'signal' | 'sleep' | 'now'> = {}) {
      let interval = started.intervalSeconds
      try {
        return await device.pollDeviceAuthorization(server, client, started, {
          ...pollOptions,
          dpop: handle,
          onPoll: async (event) => {
            if (event.outcome === 'done' || event.intervalSeconds === interval) return
            // RFC 8628 §3.5: a slow_down lasts for the code's life, restarts included.
            interval = event.intervalSeconds
            await pendingStore
              .updatePendingInterval(store, identity, deviceCode, interval)
              .catch(() => undefined)
          },
        })
      } catch (err) {
        // Denied, expired, refused by the server, or spent (tokens issued but unusable): the code
        // is dead and a later start must not offer it again. Only a stop keeps it for a resume.
        if (!isEdgeTokenError(err, 'ERR_CANCELLED')) {
          await pendingStore.clearPendingSignIn(store, identity, deviceCode).catch(() => undefined)
        }
        throw err
      }
    },
    async forget() {
      await pendingStore.clearPendingSignIn(store, identity, deviceCode)
    },
    async save(saveOptions: SaveDeviceSignInOptions) {
      const { saveReplacingSignIn } = await import('./replace-sign-in.js')
      await saveReplacingSignIn(store, {
        ...saveOptions,
        authority: identity.authority,
        clientId: identity.clientId,
        dpopKey,
        server,
        client,
      })
    },
  })
}
