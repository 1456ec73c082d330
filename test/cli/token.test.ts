/**
 * `edgetoken token` end to end: the CLI as a child process against the real test IdP
 * (oidc-provider with refresh-token rotation and reuse detection).
 */
import assert from 'node:assert/strict'
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  watch,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { isEdgeTokenError } from '../../src/errors.js'
import { resolveAuthority } from '../../src/oauth/authority.js'
import { refreshTokenGrant } from '../../src/oauth/grants/refresh.js'
import { acquireTokenSilent, readAccountStatus } from '../../src/store/cache.js'
import { openTokenStore, STORE_FILE } from '../../src/store/token-store.js'
import { type CliResult, collect, newTestDevice, ROOT, runCli, seedSignIn, spawnCli } from '../support/cli.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-token-cli-'))
after(() => rmSync(root, { recursive: true, force: true }))
let n = 0

const SCOPES = ['openid', 'offline_access', 'telemetry:write']
/** Every CLI result, to check later that no secret leaked into stderr. */
const results: { args: readonly string[]; result: CliResult }[] = []

interface Device {
  stateDir: string
  env: Record<string, string>
}

function newDevice(idp: TestIdp): Device {
  return newTestDevice(root, { issuer: idp.issuer, clientId: idp.publicClientId, scopes: SCOPES })
}

async function signIn(idp: TestIdp): Promise<Device> {
  const device = newDevice(idp)
  await seedSignIn({
    issuer: idp.issuer,
    clientId: idp.publicClientId,
    scopes: SCOPES,
    stateDir: device.stateDir,
    env: device.env,
  })
  return device
}

async function cli(
  device: Device,
  args: readonly string[],
  env: Record<string, string> = {},
  nodeArgs: string[] = [],
): Promise<CliResult> {
  const result = await runCli(args, { env: { ...device.env, ...env }, timeoutMs: 60_000, nodeArgs })
  results.push({ args, result })
  return result
}

function allSecrets(idp: TestIdp): string[] {
  const { accessTokens, refreshTokens, deviceCodes, idTokens } = idp.issued
  return [...accessTokens, ...refreshTokens, ...deviceCodes, ...idTokens]
}

function assertNoSecretIn(text: string | Buffer, secrets: readonly string[], where: string): void {
  for (const secret of secrets) assert.ok(!text.includes(secret), `a token leaked into ${where}`)
}

/**
 * Node flags that run the CLI with its clock `seconds` ahead: time passes for the token's expiry
 * without waiting for it, however slowly this machine spawns the CLI.
 */
function clockAhead(seconds: number): string[] {
  return ['--import', `data:text/javascript,const now = Date.now; Date.now = () => now() + ${seconds * 1000}`]
}

/** A forced refresh in this process, the way the CLI does it. */
async function forceRefreshHere(idp: TestIdp, device: Device) {
  const store = await openTokenStore({ stateDir: device.stateDir, env: device.env })
  return acquireTokenSilent(store, {
    authority: idp.issuer,
    clientId: idp.publicClientId,
    scopes: SCOPES,
    forceRefresh: true,
    refresh: async (rt, scopes) =>
      refreshTokenGrant(await resolveAuthority(idp.issuer), { clientId: idp.publicClientId }, rt, scopes),
  })
}

describe('edgetoken token', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ accessTokenTtlSeconds: 300 })
  })
  after(async () => {
    await idp?.close()
  })

  test('prints the cached token without a refresh, refreshes when it is due, and after expiry', async () => {
    // A 300 s token: due for refresh 150 s (half its lifetime) before it expires. The CLI's clock is
    // moved instead of waiting, so a slow spawn cannot make the cached token look due.
    const device = await signIn(idp)
    const before = idp.refreshes
    const first = await cli(device, ['token'])
    assert.equal(first.code, 0, first.stderr)
    assert.equal(first.stderr, '')
    assert.equal(idp.refreshes, before, 'a valid cached token is printed without a refresh')
    const token = first.stdout.trimEnd()
    assert.equal(first.stdout, `${token}\n`)
    assert.ok(idp.issued.accessTokens.includes(token), 'the token the IdP issued')
    // 200 s later: still valid for 100 s, but due.
    const second = await cli(device, ['token', '--json'], {}, clockAhead(200))
    assert.equal(second.code, 0, second.stderr)
    const body = JSON.parse(second.stdout)
    assert.deepEqual(Object.keys(body).sort(), ['access_token', 'expires_at', 'scope', 'token_type'])
    // seedSignIn binds no DPoP key, so the refreshed token stays a bearer token (issue 14).
    assert.equal(body.token_type, 'Bearer')
    assert.notEqual(body.access_token, token)
    assert.equal(body.access_token, idp.issued.accessTokens.at(-1))
    assert.match(body.expires_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
    assert.equal(body.scope, 'telemetry:write')
    assert.equal(idp.refreshes, before + 1)
    // 600 s later: the new token (valid until about 500 s on) has expired, and is never printed.
    const third = await cli(device, ['token'], {}, clockAhead(600))
    assert.equal(third.code, 0, third.stderr)
    assert.notEqual(third.stdout.trimEnd(), body.access_token)
    assert.equal(third.stdout.trimEnd(), idp.issued.accessTokens.at(-1))
    assert.equal(idp.refreshes, before + 2)
  })

  test('--min-ttl-seconds forces a refresh, and warns when the IdP cannot issue that long', async () => {
    const device = await signIn(idp)
    const before = idp.refreshes
    const enough = await cli(device, ['token', '--min-ttl-seconds', '60'])
    assert.equal(enough.code, 0, enough.stderr)
    assert.equal(idp.refreshes, before)
    const longer = await cli(device, ['token', '--min-ttl-seconds', '600', '--json'])
    assert.equal(longer.code, 0, longer.stderr)
    assert.equal(idp.refreshes, before + 1)
    assert.equal(JSON.parse(longer.stdout).access_token, idp.issued.accessTokens.at(-1))
    assert.match(longer.stderr, /^edgetoken: warning: .*less than the 600 s asked for\n$/)
    const bad = await cli(device, ['token', '--min-ttl-seconds', 'soon'])
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /^edgetoken: --min-ttl-seconds must be a whole number/)
  })

  test('10 concurrent --force-refresh processes all succeed and the grant survives', async () => {
    const device = await signIn(idp)
    const before = idp.refreshes
    const runs = await Promise.all(
      Array.from({ length: 10 }, () => cli(device, ['token', '--force-refresh'])),
    )
    for (const r of runs) {
      assert.equal(r.code, 0, r.stderr)
      assert.ok(idp.issued.accessTokens.includes(r.stdout.trim()), 'each prints a token the IdP issued')
    }
    assert.ok(
      idp.refreshes - before >= 1 && idp.refreshes - before <= 10,
      `${idp.refreshes - before} refreshes`,
    )
    // Reuse detection would have revoked the grant: the next refresh must still work.
    const next = await cli(device, ['token', '--force-refresh'])
    assert.equal(next.code, 0, next.stderr)
    assert.equal(next.stdout.trim(), idp.issued.accessTokens.at(-1))
    const status = await cli(device, ['status', '--json'])
    assert.equal(JSON.parse(status.stdout).signed_in, true)
  })

  test('SIGKILL at random moments during refresh never leaves an unreadable store or a silently burned token', async (t) => {
    let device = await signIn(idp)
    let kills = 0
    let working = 0
    let resignIns = 0
    for (let round = 0; round < 32; round++) {
      const child = spawnCli(['token', '--force-refresh'], { env: device.env })
      const done = collect(child, { timeoutMs: 60_000 })
      if (round % 2 === 0) {
        // Aim at the refresh and the save: kill 0-400 ms after the child takes the store lock.
        const locked = new Promise<void>((resolve) => {
          const watcher = watch(device.stateDir, (_event, name) => {
            if (name === 'tokens.lock') {
              watcher.close()
              resolve()
            }
          })
          done.finally(() => {
            watcher.close()
            resolve()
          })
        })
        await locked
        await sleep(Math.floor(Math.random() * 400))
      } else {
        await sleep(150 + Math.floor(Math.random() * 500))
      }
      const alive = child.exitCode === null
      child.kill('SIGKILL')
      const r = await done
      if (alive && r.signal === 'SIGKILL') kills += 1
      assert.ok(r.signal === 'SIGKILL' || r.code === 0, `round ${round}: exit ${r.code} ${r.stderr}`)
      // The store always opens (never ERR_STORE_UNREADABLE) ...
      const store = await openTokenStore({ stateDir: device.stateDir, env: device.env })
      await store.read()
      // ... and its refresh token works, or the account is marked as needing sign-in (it was burned
      // by a kill between the IdP's rotation and our save; the IdP's reuse detection caught it).
      try {
        await forceRefreshHere(idp, device)
        working += 1
      } catch (err) {
        assert.ok(isEdgeTokenError(err, 'ERR_SIGNIN_REQUIRED'), `round ${round}: ${String(err)}`)
        const status = await readAccountStatus(store, { authority: idp.issuer, clientId: idp.publicClientId })
        assert.equal(status.needsSignIn, true)
        assert.notEqual(status.account, null)
        resignIns += 1
        device = await signIn(idp)
      }
    }
    t.diagnostic(
      `${kills} children killed, ${working} rounds kept a working token, ${resignIns} needed a new sign-in`,
    )
    assert.ok(kills >= 1, 'no child was killed')
    assert.ok(working >= 1, `no round ended with a working refresh token (${resignIns} sign-ins)`)
  })

  test('tampering, a wrong key or another machine -> exit 6 with one line', async () => {
    const device = await signIn(idp)
    const path = join(device.stateDir, STORE_FILE)
    const original = readFileSync(path, 'utf8')
    const copy = (): Device => {
      const other = newDevice(idp)
      cpSync(device.stateDir, other.stateDir, { recursive: true })
      return { stateDir: other.stateDir, env: { ...device.env, EDGETOKEN_STATE_DIR: other.stateDir } }
    }
    const flipped = JSON.parse(original)
    const ct = Buffer.from(flipped.ct, 'base64url')
    ct[ct.length >> 1] = (ct[ct.length >> 1] ?? 0) ^ 0x04
    flipped.ct = ct.toString('base64url')
    const cases: { name: string; setup: (d: Device) => Record<string, string>; message: RegExp }[] = [
      {
        name: 'bit flip',
        setup: (d) => {
          writeFileSync(join(d.stateDir, STORE_FILE), JSON.stringify(flipped))
          return {}
        },
        message: /failed authentication/,
      },
      {
        name: 'truncation',
        setup: (d) => {
          writeFileSync(join(d.stateDir, STORE_FILE), original.slice(0, original.length / 2))
          return {}
        },
        message: /not an encrypted edgetoken store/,
      },
      {
        name: 'plaintext swap',
        setup: (d) => {
          writeFileSync(join(d.stateDir, STORE_FILE), JSON.stringify({ v: 1, accounts: {} }))
          return {}
        },
        message: /not an encrypted edgetoken store/,
      },
      {
        name: 'wrong key',
        setup: () => {
          const key = join(root, `wrong-key-${n++}`)
          writeFileSync(key, Buffer.alloc(32, 9), { mode: 0o600 })
          return { EDGETOKEN_KEY_FILE: key }
        },
        message: /encrypted with a different key/,
      },
      {
        name: 'other machine-id',
        setup: () => {
          const mid = join(root, `other-machine-${n++}`)
          writeFileSync(mid, '00000000000000000000000000000001\n')
          return { EDGETOKEN_MACHINE_ID_FILE: mid }
        },
        message: /belongs to another machine/,
      },
    ]
    for (const c of cases) {
      const d = copy()
      const env = c.setup(d)
      const before = readFileSync(join(d.stateDir, STORE_FILE))
      // Every case through `token`; `status` (which also decrypts) once, to keep the file fast.
      for (const args of c === cases[0] ? [['token'], ['status']] : [['token']]) {
        const r = await cli(d, args, env)
        assert.equal(r.code, 6, `${c.name} ${args[0]}: ${r.stderr}`)
        assert.equal(r.stdout, '')
        assert.match(r.stderr, /^edgetoken: [^\n]+\n$/, c.name)
        assert.match(r.stderr, c.message, c.name)
      }
      // Never reset, never rewritten: the file is byte for byte what the case left there.
      assert.deepEqual(readFileSync(join(d.stateDir, STORE_FILE)), before, `${c.name}: store was rewritten`)
    }
    const json = await cli(copy(), ['token', '--json'], { EDGETOKEN_KEY_FILE: join(root, 'nope') })
    assert.equal(json.code, 2, 'a missing key file is a configuration error')
  })

  test('file modes, and no token, refresh token or device code in files, stdout or stderr', async () => {
    const device = await signIn(idp)
    const r = await cli(device, ['token', '--force-refresh'])
    assert.equal(r.code, 0)
    assert.equal(statSync(device.stateDir).mode & 0o777, 0o700)
    const secrets = allSecrets(idp)
    assert.ok(secrets.length > 3, 'the IdP issued tokens to look for')
    for (const file of readdirSync(device.stateDir)) {
      const path = join(device.stateDir, file)
      assert.equal(statSync(path).mode & 0o777, 0o600, file)
      assertNoSecretIn(readFileSync(path), secrets, file)
    }
    for (const { args, result } of results) {
      assertNoSecretIn(result.stderr, allSecrets(idp), `stderr of ${args.join(' ')}`)
      if (args[0] !== 'token') assertNoSecretIn(result.stdout, allSecrets(idp), `stdout of ${args.join(' ')}`)
    }
  })

  test('the cached path imports no HTTP client, MQTT, QR code, conf or jose', async (t) => {
    const device = await signIn(idp)
    const hooks = join(root, 'import-log-hooks.mjs')
    const register = join(root, 'import-log-register.mjs')
    writeFileSync(
      hooks,
      `import { appendFileSync } from 'node:fs'
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context)
  appendFileSync(process.env.EDGETOKEN_TEST_IMPORT_LOG, result.url + '\\n')
  return result
}
`,
    )
    writeFileSync(
      register,
      `import { register } from 'node:module'\nregister(${JSON.stringify(`file://${hooks}`)})\n`,
    )
    const loaded = async (args: string[], entry: 'src' | 'dist' = 'src'): Promise<string> => {
      const log = join(root, `imports-${n++}.log`)
      writeFileSync(log, '')
      const r = await runCli(args, {
        env: { ...device.env, EDGETOKEN_TEST_IMPORT_LOG: log },
        nodeArgs: ['--import', register],
        timeoutMs: 60_000,
        entry,
      })
      assert.equal(r.code, 0, r.stderr)
      return readFileSync(log, 'utf8')
    }
    const heavy = /\/node_modules\/(undici|mqtt|qrcode-terminal|conf|ajv|jose|atomically)\//
    const cached = await loaded(['token'])
    assert.match(cached, /src\/store\/envelope\.ts/, 'the import log works')
    assert.doesNotMatch(cached, heavy)
    // Control: a refresh does load them, so the check above can fail.
    const refreshed = await loaded(['token', '--force-refresh'])
    assert.match(refreshed, /\/node_modules\/undici\//)
    assert.match(refreshed, /\/node_modules\/jose\//)

    // The built CLI (what users run; `npm run build` bundles the executable and its cached answer
    // into one CommonJS file, config/bundle-cli.mjs): the cached path loads that file and no other
    // module of ours or any package; a refresh reaches the full CLI and the lazily loaded protocol
    // modules in dist/lib through the rewritten import paths.
    if (!existsSync(join(ROOT, 'dist', 'cli.js'))) {
      t.skip('dist/cli.js is not built (npm run build)')
      return
    }
    const distCached = await loaded(['token'], 'dist')
    const ours = distCached.split('\n').filter((url) => url.includes('/dist/'))
    assert.deepEqual([...new Set(ours.map((url) => url.slice(url.indexOf('/dist/'))))], ['/dist/cli.js'])
    assert.doesNotMatch(distCached, heavy)
    const distRefreshed = await loaded(['token', '--force-refresh'], 'dist')
    assert.match(distRefreshed, /\/dist\/lib\/cli\/process\.js/)
    assert.match(distRefreshed, /\/dist\/lib\/oauth\/grants\/refresh\.js/)
    assert.match(distRefreshed, /\/node_modules\/jose\//)
  })
})
