/**
 * `edgetoken login --browser [--no-open]`: the authorization code grant with PKCE (RFC 7636 S256),
 * `state` and `nonce`, redirected to a loopback listener (RFC 8252 §7.3), for kiosks and desktops
 * where someone can use a browser on (or forwarded to) this machine.
 *
 * config -> store -> authority -> listener on 127.0.0.1:<random>/ -> authorization URL (printed
 * on stderr always; `authorization_url` event with --json) -> `$BROWSER` or `xdg-open` (unless
 * --no-open) -> callbacks judged one at a time: wrong `state`, wrong `iss`, no code or an `error=`
 * answer get a plain page and are never redeemed (the sign-in keeps waiting); the one that passes
 * is redeemed with the verifier (id_token nonce checked) -> the same encrypted store as a device
 * code sign-in -> `signed_in`. After that `token`, `run` and renewal cannot tell the difference.
 *
 * DPoP (RFC 9449) as for a device code: the account's key (kept, or made before the URL is shown)
 * is named in the authorization request (`dpop_jkt`, §10) and proves the redemption (§5), so the
 * code and then the tokens are bound to it; it is saved with them, and refreshes prove it too.
 * The refresh token a sign-in replaces (same account or another) is revoked after the save
 * (RFC 7009), best effort.
 *
 * @see https://www.rfc-editor.org/rfc/rfc8252#section-7.3
 * @see https://www.rfc-editor.org/rfc/rfc7636
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-10
 */
import { assertSaneClock } from '../../agent/clock.js'
import { requireIdentity } from '../../config/load.js'
import type { EdgeTokenConfig } from '../../config/types.js'
import { EdgeTokenError, InvalidResponseError, isEdgeTokenError, OAuthServerError } from '../../errors.js'
import type { TokenSet } from '../../oauth/types.js'
import type { CommandContext } from '../context.js'
import { ExitCode } from '../exit-codes.js'

/**
 * How long a browser sign-in waits without `--timeout-seconds`, seconds: as long as an Entra ID
 * device code lives, so a forgotten `login --browser` does not hold a port for ever.
 */
export const DEFAULT_BROWSER_TIMEOUT_SECONDS = 900

/** Shell-quotes a path for the one-line hint (the message is copied into a terminal). */
function quote(text: string): string {
  return /^[A-Za-z0-9_./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`
}

/** The callback's error answer as one line for the terminal and the browser page (no secret). */
function serverAnswer(err: OAuthServerError): string {
  const description = err.errorDescription
    ? `: ${err.errorDescription.replace(/[^\x20-\x7e]/g, ' ').slice(0, 160)}`
    : ''
  return `the authorization server answered ${err.error.replace(/[^\x20-\x7e]/g, '').slice(0, 60)}${description}`
}

/**
 * Runs `login --browser`.
 *
 * @param ctx - the command context (`--no-open`, `--json`, signal).
 * @param config - the loaded configuration.
 * @returns the exit code.
 * @throws EdgeTokenError `ERR_USAGE` (exit 2) when there is no browser to open (no `$BROWSER`,
 *   no `DISPLAY`/`WAYLAND_DISPLAY`) and `--no-open` was not given, or with a machine grant;
 *   `ERR_EXPIRED` (exit 4) on `--timeout-seconds`; `ERR_CANCELLED` (exit 4) on Ctrl-C;
 *   OAuthServerError / `ERR_UNAVAILABLE` (exit 5) when the IdP fails; StoreError (exit 6).
 * @see https://www.rfc-editor.org/rfc/rfc8252#section-7.3
 */
export async function runBrowserLogin(ctx: CommandContext, config: EdgeTokenConfig): Promise<number> {
  if (config.grant !== 'device_code') {
    throw new EdgeTokenError(
      'ERR_USAGE',
      `login --browser signs a user in; the configured grant ${config.grant} has no user (run: edgetoken login)`,
    )
  }
  const noOpen = ctx.options['no-open'] === true
  const { browserCommandFor, openBrowser } = await import('../../identity/open-browser.js')
  const browser = noOpen ? undefined : browserCommandFor(ctx.env)
  if (!noOpen && browser === undefined) {
    // Never wait for a browser that cannot appear: say so before anything starts.
    const stateDir = ctx.options['state-dir']
    const prefix = typeof stateDir === 'string' ? `edgetoken --state-dir ${quote(stateDir)}` : 'edgetoken'
    throw new EdgeTokenError(
      'ERR_USAGE',
      `no browser to open here (neither DISPLAY, WAYLAND_DISPLAY nor BROWSER is set): sign in with a device code (${prefix} login), or run ${prefix} login --browser --no-open and open the URL elsewhere`,
    )
  }
  assertSaneClock()
  const identity = requireIdentity(config)
  const timeoutSeconds = config.timeoutSeconds ?? DEFAULT_BROWSER_TIMEOUT_SECONDS
  const timeoutSignal = AbortSignal.timeout(timeoutSeconds * 1000)
  const signal = AbortSignal.any([ctx.signal, timeoutSignal])
  const interrupted = (err: unknown): unknown => {
    if (ctx.signal.aborted) {
      return isEdgeTokenError(err, 'ERR_CANCELLED')
        ? err
        : new EdgeTokenError('ERR_CANCELLED', 'sign-in cancelled')
    }
    if (timeoutSignal.aborted) {
      const flag =
        config.timeoutSeconds === undefined ? 'the default of login --browser' : '--timeout-seconds'
      return new EdgeTokenError('ERR_EXPIRED', `no sign-in within ${timeoutSeconds} seconds (${flag})`)
    }
    return err
  }

  const [authority, pkce, grants, { accountFromTokenSet }, { signInScopes }, claims, store, metadata] =
    await Promise.all([
      import('../../oauth/authority.js'),
      import('../../oauth/grants/pkce.js'),
      import('../../oauth/grants/grants.js'),
      import('../../oauth/tokens.js'),
      import('../../oauth/scopes.js'),
      import('../../oauth/claims.js'),
      import('../../store/token-store.js'),
      import('../../store/metadata-cache.js'),
    ])
  const [{ startLoopbackListener }, { accountDPoPKey }, { readDPoPKey }, { saveReplacingSignIn }] =
    await Promise.all([
      import('../../identity/loopback-listener.js'),
      import('../../identity/dpop-key.js'),
      import('../../store/pending-signin.js'),
      import('../../identity/replace-sign-in.js'),
    ])

  // The store first: one that cannot be read (exit 6) should fail before anyone signs in.
  const tokenStore = await store.openTokenStore({
    stateDir: config.stateDir,
    env: ctx.env,
    keyFile: config.keyFile,
    onWarning: ctx.warn,
  })
  let server: Awaited<ReturnType<typeof authority.resolveAuthority>>
  try {
    server = await authority.resolveAuthority(identity.authority, {
      cache: metadata.storeMetadataCache(tokenStore),
      signal,
    })
  } catch (err) {
    throw interrupted(err)
  }
  const client = { clientId: identity.clientId }
  const scopes = signInScopes(identity.scopes)
  const claimsRequest = claims.mergeClaims(undefined, config.clientCapabilities)
  // The account's DPoP key before anything is shown: the redemption is bound to it, as a device
  // code's polls are; a new one is saved with the tokens, never before (nothing to bind till then).
  const dpop = await accountDPoPKey(config.dpop, server, await readDPoPKey(tokenStore, identity))
  const listener = await startLoopbackListener()
  try {
    const redirectUri = listener.redirectUri
    const codeVerifier = pkce.generateCodeVerifier()
    const state = pkce.generateState()
    const nonce = pkce.generateNonce()
    const authorizationUrl = pkce.buildAuthorizationUrl(server, {
      clientId: identity.clientId,
      redirectUri,
      scopes,
      state,
      nonce,
      codeChallenge: pkce.codeChallengeS256(codeVerifier),
      // OpenID Connect Core §11: offline_access is honoured only with prompt=consent (unless
      // other conditions permit it); Entra ID does not need it and would ask every time.
      prompt: server.dialect === 'entra' ? undefined : 'consent',
      claims: claimsRequest,
    })
    // RFC 9449 §10: the code is bound to the key, so only a redemption proving it can spend it.
    if (dpop !== undefined) authorizationUrl.searchParams.set('dpop_jkt', dpop.key.jkt)
    const url = authorizationUrl.href

    ctx.emit({ event: 'authorization_url', url })
    ctx.stderr.write(
      `To sign in, open this URL in a browser on this machine (the sign-in returns to ${redirectUri}):\n${url}\n`,
    )
    if (browser !== undefined) {
      try {
        await openBrowser(browser, url, ctx.env)
      } catch (err) {
        // The URL is printed: someone can still open it by hand.
        ctx.warn(`${err instanceof Error ? err.message : String(err)}; open the URL above by hand`)
      }
    }

    let tokenSet: TokenSet
    try {
      tokenSet = await listener.waitForCallback<TokenSet>(
        async (callbackUrl) => {
          let code: string
          try {
            ;({ code } = pkce.validateAuthorizationResponse(callbackUrl, {
              expectedState: state,
              issuer: server.issuer,
              redirectUri,
            }))
          } catch (err) {
            // Not redeemed, not the end: a forged, replayed or foreign callback, or an error answer.
            if (err instanceof OAuthServerError) return { reject: serverAnswer(err) }
            if (err instanceof InvalidResponseError) return { reject: err.message }
            throw err
          }
          const tokens = await grants.authorizationCodeGrant(server, client, {
            code,
            redirectUri,
            codeVerifier,
            scopes,
            expectedNonce: nonce,
            claims: claimsRequest,
            signal,
            dpop: dpop?.handle,
          })
          return { accept: tokens }
        },
        {
          signal,
          onRejected: (reason) => ctx.warn(`ignored a sign-in callback: ${reason}`),
        },
      )
    } catch (err) {
      throw interrupted(err)
    }

    const account = accountFromTokenSet(server, identity.clientId, tokenSet)
    // Saved with the key the tokens are bound to; then the refresh token replaced is revoked.
    await saveReplacingSignIn(tokenStore, {
      authority: identity.authority,
      clientId: identity.clientId,
      account,
      tokenSet,
      requestedScopes: identity.scopes,
      dpopKey: dpop?.key,
      server,
      client,
      onWarning: ctx.warn,
    })
    ctx.emit({
      event: 'signed_in',
      account: {
        id: account.id,
        ...(account.username === undefined ? {} : { username: account.username }),
        ...(account.tenant === undefined ? {} : { tenant: account.tenant }),
      },
    })
    ctx.say(`edgetoken: signed in as ${account.username ?? account.id}`)
    return ExitCode.ok
  } finally {
    await listener.close()
  }
}
