import assert from 'node:assert/strict'
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { ConfigError, StoreError } from '../../src/errors.js'
import { loadKeyMaterial } from '../../src/store/keys.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-keys-'))
after(() => rmSync(root, { recursive: true, force: true }))
let n = 0
function dir(): string {
  const d = join(root, String(n++))
  mkdirSync(d, { mode: 0o700 })
  return d
}

describe('store key material', () => {
  test('EDGETOKEN_KEY_FILE wins and must hold at least 32 bytes', () => {
    const d = dir()
    const good = join(d, 'good.key')
    writeFileSync(good, Buffer.alloc(40, 1))
    const got = loadKeyMaterial({ stateDir: d, env: { EDGETOKEN_KEY_FILE: good }, storeExists: false })
    assert.equal(got.source, 'key-file')
    assert.equal(got.material.length, 40)

    const short = join(d, 'short.key')
    writeFileSync(short, Buffer.alloc(31, 1))
    assert.throws(
      () => loadKeyMaterial({ stateDir: d, env: { EDGETOKEN_KEY_FILE: short }, storeExists: false }),
      (err: unknown) => err instanceof ConfigError && /31 bytes; at least 32/.test(err.message),
    )
    assert.throws(
      () =>
        loadKeyMaterial({ stateDir: d, env: { EDGETOKEN_KEY_FILE: join(d, 'missing') }, storeExists: false }),
      (err: unknown) => err instanceof ConfigError && /ENOENT/.test(err.message),
    )
  })

  test('warns once when EDGETOKEN_KEY_FILE is readable by group or others, as ssh does', () => {
    const d = dir()
    const open = join(d, 'open.key')
    writeFileSync(open, Buffer.alloc(32, 7))
    chmodSync(open, 0o644)
    const warnings: string[] = []
    const load = () =>
      loadKeyMaterial({
        stateDir: d,
        env: { EDGETOKEN_KEY_FILE: open },
        storeExists: false,
        onWarning: (m) => warnings.push(m),
      })
    assert.equal(load().material.length, 32, 'still used')
    load()
    assert.deepEqual(warnings, [
      `key file ${open} is accessible by others (mode 0644); restrict it with chmod 600 ${open}`,
    ])
    const tight = join(d, 'tight.key')
    writeFileSync(tight, Buffer.alloc(32, 7))
    chmodSync(tight, 0o600)
    loadKeyMaterial({
      stateDir: d,
      env: { EDGETOKEN_KEY_FILE: tight },
      storeExists: false,
      onWarning: (m) => warnings.push(m),
    })
    assert.equal(warnings.length, 1, 'no warning for a 0600 key file')
  })

  test('a systemd credential is used when no key file is set', () => {
    const d = dir()
    const creds = join(d, 'creds')
    mkdirSync(creds)
    writeFileSync(join(creds, 'edgetoken.key'), Buffer.alloc(32, 2))
    const got = loadKeyMaterial({ stateDir: d, env: { CREDENTIALS_DIRECTORY: creds }, storeExists: false })
    assert.equal(got.source, 'credential')
    assert.deepEqual(got.material, Buffer.alloc(32, 2))
  })

  test('a credentials directory without our credential falls back to a generated key', () => {
    const d = dir()
    const got = loadKeyMaterial({
      stateDir: d,
      env: { CREDENTIALS_DIRECTORY: join(d, 'none') },
      storeExists: false,
    })
    assert.equal(got.source, 'generated')
  })

  test('a generated key is 0600, warned about once, and reused', () => {
    const d = dir()
    const warnings: string[] = []
    const first = loadKeyMaterial({
      stateDir: d,
      env: {},
      storeExists: false,
      onWarning: (w) => warnings.push(w),
    })
    const second = loadKeyMaterial({
      stateDir: d,
      env: {},
      storeExists: true,
      onWarning: (w) => warnings.push(w),
    })
    assert.equal(first.source, 'generated')
    assert.deepEqual(first.material, second.material)
    assert.equal(statSync(join(d, 'store.key')).mode & 0o777, 0o600)
    assert.equal(warnings.length, 1)
    assert.match(warnings[0] ?? '', /protects only against other users/)
  })

  test('a missing generated key with an existing store fails closed instead of making a new key', () => {
    const d = dir()
    assert.throws(
      () => loadKeyMaterial({ stateDir: d, env: {}, storeExists: true }),
      (err: unknown) =>
        err instanceof StoreError && err.code === 'ERR_STORE_UNREADABLE' && /missing/.test(err.message),
    )
  })

  test('a damaged generated key is a store error', () => {
    const d = dir()
    writeFileSync(join(d, 'store.key'), 'short')
    assert.throws(
      () => loadKeyMaterial({ stateDir: d, env: {}, storeExists: true }),
      (err: unknown) => err instanceof StoreError && /damaged/.test(err.message),
    )
  })
})
