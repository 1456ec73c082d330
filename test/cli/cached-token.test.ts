/**
 * The executable's cached `token` answer (src/cli/cached-token.ts): it answers exactly what the full
 * command would print, and in every other case steps aside, changing nothing on disk.
 */
import assert from 'node:assert/strict'
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { cachedTokenAnswer } from '../../src/cli/cached-token.js'
import { STORE_FILE } from '../../src/store/token-store.js'
import {
  newTestDevice,
  runMain,
  type SeedCachedTokenOptions,
  seedCachedToken,
  type TestDevice,
} from '../support/cli.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-cached-token-'))
after(() => rmSync(root, { recursive: true, force: true }))

// No request is ever made: the authority only names the account (a closed port, to be sure).
const ISSUER = 'http://127.0.0.1:9'
const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const HOUR = 3600_000

/** A device whose store holds a token for SCOPES. */
async function device(options: SeedCachedTokenOptions = {}) {
  const d = newTestDevice(root, { issuer: ISSUER, scopes: SCOPES })
  return { device: d, ...(await seedCachedToken(d, options)) }
}

/** Every file of the state directory with its bytes and mtime, to prove nothing was touched. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name)
    out[name] = `${statSync(path).mtimeMs}:${readFileSync(path).toString('base64')}`
  }
  return out
}

describe('cached token answer', () => {
  test('answers what the full command prints: the token, or its --json line', async () => {
    const { device: d, token, expiresAt } = await device()
    for (const [argv, env] of [
      [['token'], {}],
      [['token', '--json'], {}],
      [['token'], { EDGETOKEN_JSON: 'yes' }],
      [['token', '--min-ttl-seconds', '600', '--scope', 'telemetry:write'], {}],
      [['token'], { EDGETOKEN_MIN_TTL_SECONDS: '600' }],
    ] as const) {
      const environment = { ...d.env, ...env }
      const answer = await cachedTokenAnswer(argv, environment)
      const control = await runMain(argv, environment)
      assert.equal(control.code, 0, control.err)
      assert.equal(control.err, '')
      assert.equal(answer, control.out, argv.join(' '))
    }
    assert.equal(await cachedTokenAnswer(['token'], d.env), `${token}\n`)
    assert.deepEqual(JSON.parse((await cachedTokenAnswer(['token', '--json'], d.env)) ?? ''), {
      access_token: token,
      expires_at: new Date(expiresAt).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      scope: 'telemetry:write',
      // issue 14: the fast path reads the type from the store, as the full command does.
      token_type: 'Bearer',
    })
  })

  test('steps aside, touching nothing, whenever the full command has more to do or say', async () => {
    const { device: d } = await device()
    const { device: due } = await device({ lifetimeMs: HOUR, ageMs: HOUR - 120_000 })
    const { device: warned } = await device()
    chmodSync(warned.env.EDGETOKEN_KEY_FILE, 0o644)
    const { device: tampered } = await device()
    const storePath = join(tampered.stateDir, STORE_FILE)
    const bytes = readFileSync(storePath)
    const at = bytes.length - 10
    bytes[at] = (bytes[at] ?? 0) ^ 0x01
    writeFileSync(storePath, bytes)
    const signedOut = newTestDevice(root, { issuer: ISSUER, scopes: SCOPES })

    const cases: [string, TestDevice, string[], Record<string, string>][] = [
      ['another command', d, ['status'], {}],
      ['no command', d, [], {}],
      ['--version', d, ['--version'], {}],
      ['--help', d, ['token', '--help'], {}],
      ['--force-refresh', d, ['token', '--force-refresh'], {}],
      ['EDGETOKEN_FORCE_REFRESH', d, ['token'], { EDGETOKEN_FORCE_REFRESH: '1' }],
      ['a longer --min-ttl-seconds', d, ['token', '--min-ttl-seconds', '7200'], {}],
      ['a bad --min-ttl-seconds', d, ['token', '--min-ttl-seconds', 'soon'], {}],
      ['an unknown option', d, ['token', '--bogus'], {}],
      ['a scope with no cached token', d, ['token', '--scope', 'other:read'], {}],
      ['no authority', d, ['token'], { EDGETOKEN_AUTHORITY: '' }],
      ['an insecure authority', d, ['token'], { EDGETOKEN_AUTHORITY: 'http://idp.example' }],
      ['a token due for refresh (5 min margin)', due, ['token'], {}],
      ['a key-file warning to print', warned, ['token'], {}],
      ['a tampered store', tampered, ['token'], {}],
      ['no store', signedOut, ['token'], {}],
    ]
    for (const [what, dev, argv, env] of cases) {
      const beforeState = statSync(dev.stateDir, { throwIfNoEntry: false })
        ? snapshot(dev.stateDir)
        : undefined
      assert.equal(await cachedTokenAnswer(argv, { ...dev.env, ...env }), undefined, what)
      const afterState = statSync(dev.stateDir, { throwIfNoEntry: false })
        ? snapshot(dev.stateDir)
        : undefined
      assert.deepEqual(afterState, beforeState, `${what}: the state directory changed`)
    }
    // Control: the same devices answer when nothing stands in the way.
    assert.notEqual(await cachedTokenAnswer(['token'], d.env), undefined)
    chmodSync(warned.env.EDGETOKEN_KEY_FILE, 0o600)
    assert.notEqual(await cachedTokenAnswer(['token'], warned.env), undefined)
  })
})
