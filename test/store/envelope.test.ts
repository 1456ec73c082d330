import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, test } from 'node:test'
import { StoreError } from '../../src/errors.js'
import { deriveStoreKeys, type EnvelopeContext, open, seal } from '../../src/store/envelope.js'

const secret = 'rt-very-secret-refresh-token-value'
const plaintext = JSON.stringify({ v: 1, accounts: { a: { refreshToken: secret } } })

function context(overrides: Partial<EnvelopeContext> = {}): EnvelopeContext {
  return {
    keys: deriveStoreKeys(Buffer.alloc(32, 7)),
    machineId: 'aaaa1111',
    path: '/state/tokens.store',
    ...overrides,
  }
}

function rejects(text: string, ctx: EnvelopeContext, pattern: RegExp): void {
  assert.throws(
    () => open(text, ctx),
    (err: unknown) => {
      assert.ok(err instanceof StoreError, 'a StoreError')
      assert.equal(err.code, 'ERR_STORE_UNREADABLE')
      assert.match(err.message, pattern)
      assert.doesNotMatch(err.message, /\n/)
      return true
    },
  )
}

describe('store envelope', () => {
  test('round-trips and never writes the plaintext', () => {
    const sealed = seal(plaintext, context())
    assert.equal(open(sealed, context()), plaintext)
    assert.ok(!sealed.includes(secret), 'no secret in the sealed text')
    assert.ok(!sealed.includes('accounts'), 'no document field in the sealed text')
    assert.match(sealed, /^\{"format":"edgetoken-store","v":1,/)
  })

  test('uses a fresh IV for every write', () => {
    const a = JSON.parse(seal(plaintext, context()))
    const b = JSON.parse(seal(plaintext, context()))
    assert.notEqual(a.iv, b.iv)
    assert.notEqual(a.ct, b.ct)
    assert.equal(Buffer.from(a.iv, 'base64url').length, 12)
  })

  test('a flipped ciphertext bit fails authentication', () => {
    const env = JSON.parse(seal(plaintext, context()))
    const ct = Buffer.from(env.ct, 'base64url')
    ct[3] = (ct[3] ?? 0) ^ 0x01
    env.ct = ct.toString('base64url')
    rejects(JSON.stringify(env), context(), /failed authentication \(tampered or corrupted\)/)
  })

  test('a changed tag or iv fails authentication', () => {
    for (const field of ['tag', 'iv']) {
      const env = JSON.parse(seal(plaintext, context()))
      const bytes = Buffer.from(env[field], 'base64url')
      bytes[0] = (bytes[0] ?? 0) ^ 0x80
      env[field] = bytes.toString('base64url')
      rejects(JSON.stringify(env), context(), /failed authentication/)
    }
  })

  test('truncation, plaintext and foreign files are refused', () => {
    const sealed = seal(plaintext, context())
    rejects(sealed.slice(0, sealed.length - 20), context(), /not an encrypted edgetoken store/)
    rejects(sealed.slice(0, 10), context(), /not an encrypted edgetoken store/)
    rejects('', context(), /not an encrypted edgetoken store/)
    rejects(plaintext, context(), /not an encrypted edgetoken store/)
    rejects('\u0089PNG\r\n', context(), /not an encrypted edgetoken store/)
  })

  test('a damaged field or another version is refused', () => {
    const env = JSON.parse(seal(plaintext, context()))
    rejects(JSON.stringify({ ...env, iv: 'AAAA' }), context(), /damaged/)
    rejects(JSON.stringify({ ...env, v: 2 }), context(), /unsupported format version/)
  })

  test('a wrong key is named as such', () => {
    const sealed = seal(plaintext, context())
    rejects(sealed, context({ keys: deriveStoreKeys(randomBytes(32)) }), /encrypted with a different key/)
  })

  test('another machine id is named as such, and so is a machine that lost its id', () => {
    const sealed = seal(plaintext, context())
    rejects(sealed, context({ machineId: 'bbbb2222' }), /belongs to another machine/)
    rejects(sealed, context({ machineId: undefined }), /belongs to another machine/)
  })

  test('the machine id is bound by the AAD even if the fingerprint is swapped', () => {
    // An attacker who copies the fingerprint of this machine into a store from another one still
    // fails: the AAD of the ciphertext carries the original machine id.
    const other = JSON.parse(seal(plaintext, context({ machineId: 'bbbb2222' })))
    const here = JSON.parse(seal(plaintext, context()))
    rejects(JSON.stringify({ ...other, mid: here.mid }), context(), /failed authentication/)
  })

  test('errors carry no key material or plaintext', () => {
    const sealed = seal(plaintext, context())
    const tampered = JSON.parse(sealed)
    const ct = Buffer.from(tampered.ct, 'base64url')
    ct[0] = (ct[0] ?? 0) ^ 0x01
    tampered.ct = ct.toString('base64url')
    const keys = context().keys
    const secrets = [
      secret,
      ...[Buffer.alloc(32, 7), ...Object.values(keys).map((k) => k.export())].flatMap((b) => [
        b.toString('hex'),
        b.toString('base64'),
        b.toString('base64url'),
      ]),
    ]
    for (const [text, ctx] of [
      [sealed, context({ machineId: 'zzz' })],
      [sealed, context({ keys: deriveStoreKeys(randomBytes(32)) })],
      [JSON.stringify(tampered), context()],
    ] as const) {
      assert.throws(
        () => open(text, ctx),
        (err: unknown) => {
          assert.ok(err instanceof StoreError, 'a StoreError')
          const shown = `${JSON.stringify(err)} ${String(err)} ${err.stack ?? ''} ${String(err.cause ?? '')}`
          for (const s of secrets) assert.ok(!shown.includes(s), 'no plaintext or key material in the error')
          return true
        },
      )
    }
  })
})
