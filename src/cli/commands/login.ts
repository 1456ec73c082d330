/**
 * `edgetoken login`: the device authorization grant (RFC 8628) from the command line.
 *
 * config -> authority (discovery, cached in the state dir) -> device authorization -> NDJSON
 * `device_code` event + displays (console, QR, MQTT relay) -> polling -> encrypted store ->
 * `signed_in` event + display end state. Every failure ends the displays (the relay clears its
 * retained code) before it is rethrown for the CLI to print and map to an exit code.
 *
 * The device_code never leaves the protocol core: displays and events get a {@link DisplayFlow}.
 */

import { assertSaneClock } from '../../agent/clock.js'
import { loadConfig, requireIdentity } from '../../config/load.js'
import type { EdgeTokenConfig } from '../../config/types.js'
import { type ConsoleDisplay, createConsoleDisplay } from '../../display/console.js'
import {
  type DisplayEndDetail,
  type DisplayEndState,
  type DisplayFlow,
  fanOut,
  isoSeconds,
  type LoginDisplay,
  toDisplayFlow,
} from '../../display/types.js'
import { EdgeTokenError, isEdgeTokenError } from '../../errors.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'

const HELP = `Usage: edgetoken login [--display console,qr,mqtt|none] [--timeout-seconds N]
                      [--qr-theme auto|dark|light] [--json]
       edgetoken login --browser [--no-open] [--timeout-seconds N] [--json]

Signs this device in with the OAuth 2.0 device authorization grant (RFC 8628): shows a code and a
URL; someone opens the URL on a phone or computer, enters the code and approves. The tokens are
stored encrypted in the state directory; 'edgetoken token' then renews them silently.

Options:
  --display LIST         where to show the code: console (text), qr (terminal QR code of the
                         verification URL), mqtt (retained message for a companion display on
                         <topicPrefix>/<deviceId>/login), comma-separated, or none
                         (default: console,qr, plus mqtt when mqtt.url is configured;
                         env EDGETOKEN_DISPLAY)
  --timeout-seconds N    give up after N seconds (exit 4, code expired; env EDGETOKEN_TIMEOUT_SECONDS)
  --qr-theme THEME       auto (default: black on white on a colour terminal, any theme), or dark /
                         light: plain characters for a terminal with that background, e.g. with
                         NO_COLOR (env EDGETOKEN_QR_THEME)
  --browser              sign in with a browser instead: authorization code + PKCE, redirected
                         to http://127.0.0.1:<random port>/ (RFC 8252 §7.3). Opens $BROWSER, else
                         xdg-open; the URL is always printed on stderr. Without a display
                         (DISPLAY, WAYLAND_DISPLAY) or $BROWSER it exits 2 unless --no-open.
                         Waits --timeout-seconds (default 900). With --json the first event is
                         {"event":"authorization_url","url"} (env EDGETOKEN_LOGIN_BROWSER)
  --no-open              with --browser: do not start a browser, only print the URL (open it
                         elsewhere, e.g. with ssh -L <port>:127.0.0.1:<port>; env EDGETOKEN_NO_OPEN)
  --json                 NDJSON events on stdout; the code, QR and messages go to stderr:
                         {"event":"device_code","user_code","verification_uri",
                          "verification_uri_complete"?,"expires_at","resumed"?}
                         {"event":"signed_in","account":{"id","username"?,"tenant"?}}
                         {"event":"error","code":"denied|expired|cancelled|...","message"}
  --config FILE, --state-dir DIR   see 'edgetoken --help'

Ctrl-C cancels (exit 4, code cancelled) and forgets the code. A login stopped otherwise
(SIGTERM, a crash, a reboot) leaves its code pending: the next login or run resumes it until it
expires ("resumed":true on the device_code event).

Exit codes: 0 signed in, 2 usage/config, 4 denied, expired or cancelled,
            5 authorization server unavailable or invalid, 6 token store unreadable.`

/**
 * The displays, and the warning function they and the sign-in share: a warning (e.g. from the MQTT
 * relay) passes the console's live countdown line instead of landing in it (issue 11).
 */
function buildDisplays(
  ctx: CommandContext,
  config: EdgeTokenConfig,
): { displays: LoginDisplay[]; warn: (line: string) => void } {
  // With --json, stdout is NDJSON only: everything for humans goes to stderr.
  const stream = ctx.json ? ctx.stderr : ctx.stdout
  const displays: LoginDisplay[] = []
  let live: ConsoleDisplay | undefined
  const warn = (line: string) => (live ? live.interject(() => ctx.warn(line)) : ctx.warn(line))
  for (const name of config.display) {
    if (name === 'console') {
      live = createConsoleDisplay({ stream, env: ctx.env })
      displays.push(live)
    }
    if (name === 'qr')
      displays.push(
        lazyDisplay('qr', async () => {
          const { createQrDisplay } = await import('../../display/qr.js')
          return createQrDisplay({ stream, env: ctx.env, theme: config.qrTheme, onWarning: warn })
        }),
      )
    if (name === 'mqtt' && config.mqtt) {
      const mqtt = config.mqtt
      displays.push(
        lazyDisplay('mqtt', async () => {
          const { createMqttRelay } = await import('../../display/mqtt-relay.js')
          // presence: false: the status topic is the daemon's (retained `online`); a one-shot
          // login that set it `offline` on exit would report a running agent as gone.
          return createMqttRelay({
            config: mqtt,
            deviceId: config.deviceId,
            onWarning: warn,
            presence: false,
          })
        }),
      )
    }
  }
  return { displays, warn }
}

/** A display whose module is imported only when it is first shown (qrcode-terminal, mqtt). */
function lazyDisplay(name: string, load: () => Promise<LoginDisplay>): LoginDisplay {
  let display: LoginDisplay | undefined
  return {
    name,
    async show(flow: DisplayFlow) {
      display ??= await load()
      await display.show(flow)
    },
    async waiting() {
      await display?.waiting?.()
    },
    async end(state, detail) {
      await display?.end(state, detail)
    },
    async close() {
      await display?.close()
    },
  }
}

function endStateFor(err: unknown): { state: DisplayEndState; detail?: DisplayEndDetail } {
  if (isEdgeTokenError(err, 'ERR_ACCESS_DENIED')) return { state: 'denied' }
  if (isEdgeTokenError(err, 'ERR_EXPIRED')) return { state: 'expired' }
  if (isEdgeTokenError(err, 'ERR_CANCELLED')) return { state: 'cancelled' }
  // Anything else (the IdP failing, the approved tokens not saved): not a cancellation, say why.
  return { state: 'failed', detail: { reason: err instanceof Error ? err.message : String(err) } }
}

async function run(ctx: CommandContext): Promise<number> {
  if (ctx.args.length > 0) {
    throw new EdgeTokenError('ERR_USAGE', `login takes no arguments (got '${ctx.args[0]}')`)
  }
  const config = await loadConfig({ options: ctx.options, env: ctx.env })
  // Authorization code + PKCE with a loopback redirect (issue 13).
  if (ctx.options.browser === true) {
    return (await import('./login-browser.js')).runBrowserLogin(ctx, config)
  }
  if (ctx.options['no-open'] === true) {
    throw new EdgeTokenError('ERR_USAGE', '--no-open goes with --browser (login --browser --no-open)')
  }
  // A machine with no user proves its credential instead (issue 12).
  if (config.grant !== 'device_code') {
    return (await import('./login-machine.js')).runMachineLogin(ctx, config)
  }
  assertSaneClock()
  const identity = requireIdentity(config)
  // Validated by loadConfig: a whole number of seconds from 1 to 86400.
  const timeoutSeconds = config.timeoutSeconds
  const timeoutSignal = timeoutSeconds ? AbortSignal.timeout(timeoutSeconds * 1000) : undefined
  const signal = timeoutSignal ? AbortSignal.any([ctx.signal, timeoutSignal]) : ctx.signal
  const timedOut = () =>
    new EdgeTokenError('ERR_EXPIRED', `no approval within ${timeoutSeconds} seconds (--timeout-seconds)`)
  const cancelled = () => new EdgeTokenError('ERR_CANCELLED', 'sign-in cancelled')
  // Anything that fails because our own signal fired is a cancellation (or the timeout), whatever
  // error the interrupted operation happened to throw.
  const interrupted = (err: unknown): unknown => {
    if (ctx.signal.aborted) return isEdgeTokenError(err, 'ERR_CANCELLED') ? err : cancelled()
    if (timeoutSignal?.aborted) return timedOut()
    return err
  }

  const [
    { resolveAuthority },
    { prepareDeviceSignIn },
    { accountFromTokenSet },
    { signInScopes },
    store,
    metadata,
  ] = await Promise.all([
    import('../../oauth/authority.js'),
    import('../../identity/device-signin.js'),
    import('../../oauth/tokens.js'),
    import('../../oauth/scopes.js'),
    import('../../store/token-store.js'),
    import('../../store/metadata-cache.js'),
  ])

  // Open the store first: a store that cannot be read (exit 6) should fail before anyone approves.
  const tokenStore = await store.openTokenStore({
    stateDir: config.stateDir,
    env: ctx.env,
    keyFile: config.keyFile,
    onWarning: ctx.warn,
  })
  const client = { clientId: identity.clientId }
  let server: Awaited<ReturnType<typeof resolveAuthority>>
  let signIn: Awaited<ReturnType<typeof prepareDeviceSignIn>>
  try {
    server = await resolveAuthority(identity.authority, {
      cache: metadata.storeMetadataCache(tokenStore),
      signal,
    })
    // A sign-in left pending by a stopped login or run is resumed: same code (issue 14).
    signIn = await prepareDeviceSignIn({
      store: tokenStore,
      identity,
      scopes: signInScopes(identity.scopes),
      server,
      client,
      dpop: config.dpop,
      signal,
    })
  } catch (err) {
    throw interrupted(err)
  }

  const shown = toDisplayFlow(signIn.flow)
  ctx.emit({
    event: 'device_code',
    ...(signIn.resumed ? { resumed: true } : {}),
    user_code: shown.userCode,
    verification_uri: shown.verificationUri,
    ...(shown.verificationUriComplete === undefined
      ? {}
      : { verification_uri_complete: shown.verificationUriComplete }),
    expires_at: isoSeconds(shown.expiresAt),
  })
  const built = buildDisplays(ctx, config)
  const displays = fanOut(built.displays, built.warn)
  try {
    await displays.show(shown)
    let tokenSet: Awaited<ReturnType<typeof signIn.poll>>
    try {
      tokenSet = await signIn.poll({ signal })
    } catch (err) {
      // Ctrl-C is the person giving up: the code goes. A stop by the system (SIGTERM: shutdown,
      // systemd) or the timeout keeps it for the next login or run.
      if (ctx.signal.reason === 'SIGINT') await signIn.forget().catch(() => undefined)
      throw interrupted(err)
    }
    const account = accountFromTokenSet(server, identity.clientId, tokenSet)
    // Saved with its DPoP key; then the refresh token it replaced is revoked (issue 11 #1).
    await signIn.save({ account, tokenSet, requestedScopes: identity.scopes, onWarning: built.warn })
    ctx.emit({
      event: 'signed_in',
      account: {
        id: account.id,
        ...(account.username === undefined ? {} : { username: account.username }),
        ...(account.tenant === undefined ? {} : { tenant: account.tenant }),
      },
    })
    await displays.end('approved', { username: account.username })
    return ExitCode.ok
  } catch (err) {
    const end = endStateFor(err)
    await displays.end(end.state, end.detail)
    throw err
  } finally {
    await displays.close()
  }
}

const command: CommandModule = { help: HELP, run }
export default command
