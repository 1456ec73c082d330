/**
 * Shared steps of the sign-in tests that run the CLI against the real test IdP: a device-code
 * `login` approved as a named user, a `login --browser` signed in as one, the decrypted store, and
 * whether the IdP still holds a refresh token active (RFC 7662 introspection).
 */
import assert from 'node:assert/strict'
import { decodeJwt } from 'jose'
import { accountKey } from '../../src/store/document.js'
import { openTokenStore } from '../../src/store/token-store.js'
import { type CliResult, cliEnv, collect, spawnCli } from '../support/cli.js'
import { approveDevice, signInThroughLoopback } from '../support/headless-user.js'
import type { TestIdp } from '../support/idp.js'

/** The environment of one CLI run (undefined removes a variable). */
export type Env = Record<string, string | undefined>

const TIMEOUT_MS = 60_000

/** Resolves with the first NDJSON event the child prints on stdout. */
function firstEvent(child: ReturnType<typeof spawnCli>): Promise<Record<string, unknown>> {
  const first = new Promise<Record<string, unknown>>((resolve, reject) => {
    let buffered = ''
    child.stdout?.on('data', (b: Buffer) => {
      buffered += b.toString('utf8')
      const newline = buffered.indexOf('\n')
      if (newline >= 0) resolve(JSON.parse(buffered.slice(0, newline)) as Record<string, unknown>)
    })
    child.once('close', () => reject(new Error('login exited before its first event')))
  })
  first.catch(() => {})
  return first
}

/**
 * Runs `login --json --display none` and approves its code as `login`.
 *
 * @param idp - the test IdP.
 * @param env - the device's environment.
 * @param login - the user name typed at the IdP.
 * @returns the CLI's result.
 */
export async function deviceLogin(idp: TestIdp, env: Env, login: string): Promise<CliResult> {
  const child = spawnCli(['login', '--json', '--display', 'none'], { env })
  const first = firstEvent(child)
  const done = collect(child, { timeoutMs: TIMEOUT_MS })
  await approveDevice(idp.issuer, String((await first).user_code), { login })
  return done
}

/**
 * Runs `login --browser --no-open --json` and signs in as `login` through the IdP's pages.
 *
 * @param env - the desktop's environment (no DISPLAY, no BROWSER).
 * @param login - the user name typed at the IdP.
 * @returns the CLI's result and the authorization URL it printed.
 */
export async function browserLogin(env: Env, login: string): Promise<{ result: CliResult; url: URL }> {
  const child = spawnCli(['login', '--browser', '--no-open', '--json'], { env })
  const first = firstEvent(child)
  const done = collect(child, { timeoutMs: TIMEOUT_MS })
  const url = new URL(String((await first).url))
  const page = await signInThroughLoopback(url.href, { login })
  assert.equal(page.status, 200, page.body)
  return { result: await done, url }
}

/**
 * The decrypted store and the account of one client.
 *
 * @param idp - the test IdP (the authority).
 * @param env - the device's environment (state dir, key file).
 * @param clientId - the account's client id.
 * @returns the document, the account key, its entry and DPoP key.
 */
export async function storedAccount(idp: TestIdp, env: Env, clientId: string) {
  const store = await openTokenStore({ stateDir: env.EDGETOKEN_STATE_DIR ?? '', env: cliEnv({ env }) })
  const doc = await store.read()
  const key = accountKey(idp.issuer, clientId)
  return { doc, key, entry: doc.accounts[key], dpopKey: doc.dpopKeys?.[key] }
}

/**
 * The `cnf.jkt` of a JWT access token (RFC 9449 §6.1).
 *
 * @param accessToken - the token.
 * @returns the thumbprint, or undefined for a bearer token.
 */
export function cnfJkt(accessToken: string): unknown {
  return (decodeJwt(accessToken).cnf as Record<string, unknown> | undefined)?.jkt
}

/**
 * Whether the IdP still holds a refresh token active (RFC 7662 §2.2), asked as its public client.
 *
 * @param idp - the test IdP.
 * @param clientId - the public client the token was issued to.
 * @param refreshToken - the token.
 * @returns the introspection's `active`.
 */
export async function isActive(idp: TestIdp, clientId: string, refreshToken: string): Promise<boolean> {
  const response = await fetch(new URL('/token/introspection', idp.issuer), {
    method: 'POST',
    body: new URLSearchParams({ client_id: clientId, token: refreshToken, token_type_hint: 'refresh_token' }),
  })
  return ((await response.json()) as { active?: unknown }).active === true
}
