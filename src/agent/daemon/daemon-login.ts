/**
 * The daemon's own device sign-in, started by a pair request from the companion display: the
 * device flow of `edgetoken login` (RFC 8628), shown on the daemon's log and on its MQTT relay,
 * with one rule `login` does not need: a pair request is a button press on the network, not a
 * person at the device, so it may restore the account the device holds but never replace it.
 *
 * - Same account as stored (or none stored): the sign-in is saved, and a refresh token the store
 *   still held is revoked afterwards (RFC 7009), best effort: it has just been replaced.
 * - Another account: nothing is saved, the new refresh token is revoked at once, the displays end
 *   as `denied`, and the error says that switching accounts takes `edgetoken login` on the device.
 *
 * Separate from `login` because of that rule (its save has no place for the check), and because
 * the daemon already holds the store and the relay: the flow needs no second broker connection.
 *
 * @see https://www.rfc-editor.org/rfc/rfc8628#section-3.1
 * @see https://www.rfc-editor.org/rfc/rfc7009#section-2.1
 * @packageDocumentation
 */
import { Writable } from 'node:stream'
import type { DPoPSetting } from '../../config/types.js'
import type { DisplayEndState, DisplayFlow, LoginDisplay } from '../../display/types.js'
import { EdgeTokenError, isEdgeTokenError } from '../../errors.js'
import type { AuthorizationServer } from '../../oauth/authority.js'
import type { Account } from '../../oauth/types.js'
import type { AccountIdentity } from '../../store/cache.js'
import type { StoredAccountInfo } from '../../store/document.js'
import type { TokenStore } from '../../store/token-store.js'
import { type DaemonOutput, errorText } from './daemon-output.js'

/** Options of {@link createDaemonSignIn}. */
export interface DaemonSignInOptions {
  /** Which account, and the scopes to ask for. */
  identity: AccountIdentity & { readonly scopes: readonly string[] }
  /** The daemon's opened token store. */
  store: TokenStore
  /**
   * The daemon's companion-display relay, when MQTT is configured: it shows the code and the end
   * state. Never closed here (it is the daemon's).
   */
  relay?: LoginDisplay | undefined
  /** Log and warnings; the code is shown as log lines. */
  output: Pick<DaemonOutput, 'log' | 'warn'>
  /** The `dpop` setting: DPoP-bound tokens, as `login` gets them (issue 14). Default `auto`. */
  dpop?: DPoPSetting | undefined
}

/** Compares accounts as the store keys them: by id (Entra ID's includes the tenant). */
function sameAccount(stored: StoredAccountInfo, signedIn: Account): boolean {
  return stored.id === signedIn.id
}

function accountName(account: { id: string; username?: string | undefined }): string {
  return account.username ?? account.id
}

/** The relay, minus closing: the daemon's shutdown closes it, after this flow. */
function borrowed(display: LoginDisplay): LoginDisplay {
  return {
    name: display.name,
    show: (flow) => display.show(flow),
    end: (state, detail) => display.end(state, detail),
    close: () => {},
  }
}

/** A stream that hands each complete line to `log`: the console display, as daemon log lines. */
function lineStream(log: (line: string) => void): Writable {
  let partial = ''
  return new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      const lines = (partial + chunk.toString()).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) if (line.trim() !== '') log(`edgetoken: ${line.trim()}`)
      callback()
    },
  })
}

/**
 * Creates the daemon's sign-in: each call runs one device flow to its end.
 *
 * @param options - identity, store, relay and output.
 * @returns `signIn(signal)`: resolves once the sign-in is saved; rejects with `ERR_ACCESS_DENIED`
 *   when the approval was for another account than the stored one (nothing saved, the new refresh
 *   token revoked), and with what the flow threw otherwise (`ERR_ACCESS_DENIED`, `ERR_EXPIRED`,
 *   `ERR_CANCELLED`, `ERR_UNAVAILABLE`, StoreError, ...).
 */
export function createDaemonSignIn(options: DaemonSignInOptions): (signal: AbortSignal) => Promise<void> {
  const { identity, store, output } = options
  const client = { clientId: identity.clientId }

  // The same best-effort revocation as `login`'s (identity/replace-sign-in.ts), worded as log lines.
  const revoke = async (server: AuthorizationServer, token: string, what: string) => {
    const { revokeRefreshTokenBestEffort } = await import('../../identity/replace-sign-in.js')
    await revokeRefreshTokenBestEffort(server, client, token, what, {
      onRevoked: (line) => output.log(`edgetoken: ${line}`),
      onWarning: output.warn,
    })
  }

  return async (signal) => {
    const [
      { resolveAuthority },
      { prepareDeviceSignIn },
      { accountFromTokenSet },
      { signInScopes },
      cache,
      metadata,
      display,
    ] = await Promise.all([
      import('../../oauth/authority.js'),
      import('../../identity/device-signin.js'),
      import('../../oauth/tokens.js'),
      import('../../oauth/scopes.js'),
      import('../../store/cache.js'),
      import('../../store/metadata-cache.js'),
      import('../../display/console.js'),
    ])
    const { fanOut, toDisplayFlow } = await import('../../display/types.js')
    const server = await resolveAuthority(identity.authority, {
      cache: metadata.storeMetadataCache(store),
      signal,
    })
    // The device-code way in `login` uses: DPoP, and a pending sign-in resumed (issue 14).
    const prepared = await prepareDeviceSignIn({
      store,
      identity,
      scopes: signInScopes(identity.scopes),
      server,
      client,
      dpop: options.dpop,
      signal,
    })
    if (prepared.resumed) output.log('edgetoken: resuming the pending sign-in (same code)')
    const flow = prepared.flow
    const displays = fanOut(
      [
        display.createConsoleDisplay({ stream: lineStream(output.log) }),
        ...(options.relay ? [borrowed(options.relay)] : []),
      ],
      output.warn,
    )
    const shown: DisplayFlow = toDisplayFlow(flow)
    // How the displays end when something below throws; unset: judged from the error.
    let refused: { state: DisplayEndState; reason: string } | undefined
    try {
      await displays.show(shown)
      const tokenSet = await prepared.poll({ signal })
      const account = accountFromTokenSet(server, identity.clientId, tokenSet)
      const before = await cache.readAccountStatus(store, identity)
      if (before.account && !sameAccount(before.account, account)) {
        // A pair request must not switch accounts: that takes a person at the device.
        refused = { state: 'denied', reason: 'approved for another account than the device holds' }
        // RFC 7009 §2.1: revoking the refresh token ends the grant's access tokens as well.
        const token = tokenSet.refreshToken
        if (token !== undefined) await revoke(server, token, 'the refresh token of the other account')
        throw new EdgeTokenError(
          'ERR_ACCESS_DENIED',
          `the sign-in was approved as ${accountName(account)}, but this device holds ${accountName(before.account)}; ` +
            "the new tokens were revoked and discarded: to switch accounts, run 'edgetoken login' on the device",
        )
      }
      const previous = await cache.readRefreshToken(store, identity)
      await cache.saveSignIn(store, {
        authority: identity.authority,
        clientId: identity.clientId,
        account,
        tokenSet,
        requestedScopes: identity.scopes,
        signal,
        dpopKey: prepared.dpopKey,
      })
      await displays.end('approved', { username: account.username })
      // Replaced, so never used again: revoke it, after the save (which it must not delay or stop).
      if (previous !== undefined && previous !== tokenSet.refreshToken) {
        await revoke(server, previous, 'the replaced refresh token')
      }
    } catch (err) {
      const end = refused ?? endOf(err)
      await displays.end(end.state, end.reason === undefined ? undefined : { reason: end.reason })
      throw err
    } finally {
      await displays.close()
    }
  }
}

/** The display end state for a failed flow (as `login` words it). */
function endOf(err: unknown): { state: DisplayEndState; reason?: string } {
  if (isEdgeTokenError(err, 'ERR_ACCESS_DENIED')) return { state: 'denied' }
  if (isEdgeTokenError(err, 'ERR_EXPIRED')) return { state: 'expired' }
  if (isEdgeTokenError(err, 'ERR_CANCELLED')) return { state: 'cancelled' }
  return { state: 'failed', reason: errorText(err) }
}
