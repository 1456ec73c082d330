/**
 * `edgetoken status` end to end against the real test IdP.
 */
import assert from 'node:assert/strict'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { resolveAuthority } from '../../src/oauth/authority.js'
import { revokeToken } from '../../src/oauth/grants/refresh.js'
import { openSpool } from '../../src/telemetry/spool/spool.js'
import { newTestDevice, runCli, seedSignIn } from '../support/cli.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-status-cli-'))
after(() => rmSync(root, { recursive: true, force: true }))
const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/

describe('edgetoken status', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp()
  })
  after(() => idp?.close())

  function device() {
    return newTestDevice(root, { issuer: idp.issuer, clientId: idp.publicClientId, scopes: SCOPES })
  }

  test('issue 11 #1: a fresh machine needs a sign-in: exit 3, needs_sign_in true, the next step on stderr; no key or store is created', async () => {
    const d = device()
    const { EDGETOKEN_KEY_FILE: _key, ...env } = d.env
    const r = await runCli(['status', '--json'], { env })
    assert.equal(r.code, 3, r.stderr)
    assert.deepEqual(JSON.parse(r.stdout), {
      signed_in: false,
      needs_sign_in: true,
      account: null,
      access_token_expires_at: null,
      spool: { pending: 0, dropped: 0, dead_lettered: 0 },
    })
    assert.equal(r.stderr, 'edgetoken: nobody has signed in; run: edgetoken login\n')
    assert.equal(existsSync(join(d.stateDir, 'store.key')), false)
    assert.equal(existsSync(join(d.stateDir, 'tokens.store')), false)
    const human = await runCli(['status'], { env })
    assert.equal(human.code, 3)
    assert.equal(human.stderr, '')
    assert.equal(
      human.stdout,
      [
        'signed in: no (nobody has signed in)',
        'spool: 0 pending, 0 dropped, 0 dead-lettered',
        'config: none (environment and defaults)',
        `state dir: ${d.stateDir}`,
        'run: edgetoken login',
        '',
      ].join('\n'),
    )
  })

  test('issue 11 #1: the next step names the --config and --state-dir of this command line', async () => {
    const d = device()
    const config = join(root, 'my config.json')
    writeFileSync(config, JSON.stringify({ authority: idp.issuer, clientId: idp.publicClientId }))
    const stateDir = join(d.stateDir, 'elsewhere')
    const r = await runCli(['status', '--config', config, '--state-dir', stateDir], { env: d.env })
    assert.equal(r.code, 3, r.stderr)
    assert.match(r.stdout, new RegExp(`\nconfig: ${config}\nstate dir: ${stateDir}\n`))
    assert.ok(
      r.stdout.endsWith(`\nrun: edgetoken --config '${config}' --state-dir ${stateDir} login\n`),
      r.stdout,
    )
    const json = await runCli(['--json', 'status', '--state-dir', stateDir], { env: d.env })
    assert.equal(json.code, 3)
    assert.equal(JSON.parse(json.stdout).needs_sign_in, true)
    assert.equal(
      json.stderr,
      `edgetoken: nobody has signed in; run: edgetoken --state-dir ${stateDir} login\n`,
    )
  })

  test('shows the account, the token expiry and the spool', async () => {
    const d = device()
    const tokens = await seedSignIn({
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      stateDir: d.stateDir,
      env: d.env,
    })
    const spool = await openSpool(d.stateDir)
    await spool.append([{ t: 1 }, { t: 2 }, { t: 3 }])
    await spool.close()
    const r = await runCli(['status', '--json'], { env: d.env })
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stderr, '')
    const body = JSON.parse(r.stdout)
    assert.equal(body.signed_in, true)
    assert.equal(body.needs_sign_in, false)
    assert.deepEqual(body.account, { id: 'device-user' })
    assert.match(body.access_token_expires_at, ISO)
    assert.ok(Math.abs(Date.parse(body.access_token_expires_at) - tokens.expiresAt) < 1000)
    assert.equal(body.spool.pending, 3)
    const human = await runCli(['status'], { env: d.env })
    assert.equal(human.code, 0)
    assert.match(
      human.stdout,
      /^signed in: yes\naccount: device-user\naccess token expires: \S+Z\nspool: 3 pending[^\n]*\nconfig: [^\n]+\nstate dir: [^\n]+\n$/,
    )
    for (const secret of [tokens.accessToken, tokens.refreshToken ?? '']) {
      assert.ok(!r.stdout.includes(secret) && !human.stdout.includes(secret))
    }
  })

  test('issue 11 #1: a revoked refresh token: token and status exit 3, status keeps the account and says sign-in is required', async () => {
    const d = device()
    const tokens = await seedSignIn({
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      stateDir: d.stateDir,
      env: d.env,
    })
    const server = await resolveAuthority(idp.issuer)
    await revokeToken(server, { clientId: idp.publicClientId }, tokens.refreshToken ?? '', 'refresh_token')
    const t = await runCli(['token', '--force-refresh'], { env: d.env })
    assert.equal(t.code, 3, t.stderr)
    assert.match(t.stderr, /^edgetoken: [^\n]+\n$/)
    const again = await runCli(['token', '--force-refresh'], { env: d.env })
    assert.equal(again.code, 3)
    assert.match(again.stderr, /edgetoken login/)
    const r = await runCli(['status', '--json'], { env: d.env })
    assert.equal(r.code, 3, r.stderr)
    const body = JSON.parse(r.stdout)
    assert.equal(body.signed_in, false)
    assert.equal(body.needs_sign_in, true)
    assert.deepEqual(body.account, { id: 'device-user' })
    assert.equal(
      r.stderr,
      'edgetoken: sign-in required: the refresh token was rejected; run: edgetoken login\n',
    )
    const human = await runCli(['status'], { env: d.env })
    assert.equal(human.code, 3)
    assert.match(human.stdout, /^signed in: no \(sign-in required: the refresh token was rejected\)\n/)
    assert.match(human.stdout, /\nrun: edgetoken login\n$/)
  })

  async function signedIn() {
    const d = device()
    await seedSignIn({
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      stateDir: d.stateDir,
      env: d.env,
    })
    return d
  }

  test('a state directory shared with others (1777) is a config error (exit 2), and is left as it is', async () => {
    const d = await signedIn()
    chmodSync(d.stateDir, 0o1777)
    try {
      const r = await runCli(['status'], { env: d.env })
      assert.equal(r.code, 2, r.stderr)
      assert.equal(
        r.stderr,
        `edgetoken: state directory ${d.stateDir} is writable by others (mode 1777); use a private subdirectory (e.g. ${d.stateDir}/edgetoken)\n`,
      )
      assert.equal(statSync(d.stateDir).mode & 0o7777, 0o1777)
    } finally {
      chmodSync(d.stateDir, 0o700)
    }
  })

  test('an unreadable store file exits 6 with one line naming the file and errno', {
    skip: process.getuid?.() === 0 && 'root reads any file',
  }, async () => {
    const d = await signedIn()
    const store = join(d.stateDir, 'tokens.store')
    chmodSync(store, 0o000)
    try {
      const r = await runCli(['status', '--json'], { env: d.env })
      assert.equal(r.code, 6, r.stderr)
      assert.equal(r.stderr, `edgetoken: token store ${store} cannot be read (EACCES)\n`)
    } finally {
      chmodSync(store, 0o600)
    }
  })

  test('issue 20: a store that cannot be read as root either (a directory in its place) exits 6 with one line', async () => {
    const d = await signedIn()
    const store = join(d.stateDir, 'tokens.store')
    rmSync(store)
    mkdirSync(store)
    const r = await runCli(['status', '--json'], { env: d.env })
    assert.equal(r.code, 6, r.stderr)
    assert.equal(r.stderr, `edgetoken: token store ${store} cannot be read (EISDIR)\n`)
  })

  test('a key file readable by others is used, with one warning', async () => {
    const d = await signedIn()
    chmodSync(d.env.EDGETOKEN_KEY_FILE, 0o644)
    const r = await runCli(['status'], { env: d.env })
    assert.equal(r.code, 0, r.stderr)
    const key = d.env.EDGETOKEN_KEY_FILE
    assert.equal(
      r.stderr,
      `edgetoken: warning: key file ${key} is accessible by others (mode 0644); restrict it with chmod 600 ${key}\n`,
    )
  })
})
