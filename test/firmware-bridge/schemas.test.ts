import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, test } from 'node:test'
import { Ajv2020 } from 'ajv/dist/2020.js'
import addFormats from 'ajv-formats'
import { frameRows, Screen, screenFor, sinceText } from '../../firmware-bridge/simulators/layout.js'
import { parseLogin } from '../../firmware-bridge/simulators/login.js'

const root = new URL('../../firmware-bridge/', import.meta.url)
const readJson = (path: string): unknown => JSON.parse(readFileSync(new URL(path, root), 'utf8'))

function compile(name: string) {
  const ajv = new Ajv2020({ allErrors: true, strict: true })
  addFormats.default(ajv)
  const schema = readJson(`schema/${name}.schema.json`) as { examples: unknown[] }
  return { validate: ajv.compile(schema), examples: schema.examples }
}

interface Payloads {
  valid: Array<{ name: string; payload: string }>
  invalid: Array<{ name: string; payload: string }>
}
const payloads = readJson('firmware/tests/login_payloads.json') as Payloads

describe('firmware-bridge schemas', () => {
  for (const name of ['login', 'status', 'pair', 'reading']) {
    test(`${name}: compiles in strict mode and accepts its own examples`, () => {
      const { validate, examples } = compile(name)
      assert.ok(examples.length > 0)
      for (const example of examples) assert.equal(validate(example), true, JSON.stringify(validate.errors))
    })
  }

  test('login: the schema and the display parser agree on every fixture', () => {
    const { validate } = compile('login')
    for (const { name, payload } of payloads.valid) {
      assert.equal(validate(JSON.parse(payload)), true, `${name}: ${JSON.stringify(validate.errors)}`)
      assert.notEqual(parseLogin(payload), null, name)
    }
    for (const { name, payload } of payloads.invalid) {
      let value: unknown
      try {
        value = JSON.parse(payload)
      } catch {
        value = undefined // not JSON at all: no schema can accept it
      }
      assert.equal(value !== undefined && validate(value), false, `schema accepted ${name}`)
      assert.equal(parseLogin(payload), null, `parser accepted ${name}`)
    }
  })

  test('login: a device_code is never part of a valid message', () => {
    const { validate } = compile('login')
    const base = { state: 'pending', user_code: 'WDJB-MJHT', verification_uri: 'https://example.com/device' }
    const ok = { ...base, expires_at: '2026-11-25T10:15:00Z' }
    assert.equal(validate(ok), true)
    assert.equal(validate({ ...ok, device_code: 'GmRhmhcxhwAzkoEqiMEg' }), false)
    assert.equal(validate({ state: 'approved', device_code: 'x' }), false)
  })

  test('login: signin_required carries exactly since and pair, never a token', () => {
    const { validate } = compile('login')
    const ok = { state: 'signin_required', since: '2026-11-25T09:30:05Z', pair: false }
    assert.equal(validate(ok), true, JSON.stringify(validate.errors))
    assert.deepEqual(parseLogin(JSON.stringify(ok)), {
      kind: 'signin_required',
      since: '2026-11-25T09:30:05Z',
      sinceEpoch: 1795599005,
      pair: false,
    })
    assert.equal(validate({ ...ok, refresh_token: 'x' }), false)
    assert.equal(validate({ ...ok, device_code: 'x' }), false)
    assert.equal(validate({ ...ok, pair: null }), false)
    const { pair: _pair, ...noPair } = ok
    assert.equal(validate(noPair), false)
    assert.equal(parseLogin(JSON.stringify(noPair)), null)
  })

  test('status: only online/offline', () => {
    const { validate } = compile('status')
    assert.equal(validate('online'), true)
    assert.equal(validate('offline'), true)
    assert.equal(validate('Online'), false)
    assert.equal(validate({ status: 'online' }), false)
  })

  test('pair: nonce bounds and strict shape', () => {
    const { validate } = compile('pair')
    const ok = { request: 'signin', nonce: 'abcd_EF-12', at: '2026-11-25T10:00:00Z' }
    assert.equal(validate(ok), true)
    assert.equal(validate({ ...ok, nonce: 'short' }), false)
    assert.equal(validate({ ...ok, nonce: 'a'.repeat(65) }), false)
    assert.equal(validate({ ...ok, nonce: 'has space!' }), false)
    assert.equal(validate({ ...ok, request: 'token' }), false)
    assert.equal(validate({ ...ok, at: '2026-11-25T10:00:00+02:00' }), false)
    assert.equal(validate({ ...ok, extra: 1 }), false)
  })

  test('reading: required fields, value types, bounds', () => {
    const { validate } = compile('reading')
    const ok = { sensor: 's1', at: '2026-11-25T10:00:00.123Z', values: { t: 1.5, label: 'x', on: false } }
    assert.equal(validate(ok), true)
    assert.equal(validate({ ...ok, seq: 7 }), true)
    assert.equal(validate({ ...ok, seq: 1.5 }), false)
    assert.equal(validate({ ...ok, seq: -1 }), false)
    assert.equal(validate({ ...ok, sensor: '' }), false)
    assert.equal(validate({ ...ok, sensor: 'x'.repeat(65) }), false)
    assert.equal(validate({ ...ok, values: {} }), false)
    assert.equal(validate({ ...ok, values: { nested: { a: 1 } } }), false)
    assert.equal(validate({ ...ok, values: { nothing: null } }), false)
    assert.equal(validate({ ...ok, values: { long: 'x'.repeat(1025) } }), false)
    assert.equal(validate({ ...ok, at: 'yesterday' }), false)
    assert.equal(validate({ ...ok, extra: true }), false)
    const { at: _at, ...noTime } = ok
    assert.equal(validate(noTime), false)
  })
})

describe('display layout parity with the firmware', () => {
  test('the Node port renders every shared fixture exactly like layout.py', () => {
    const { cases } = readJson('firmware/tests/layout_cases.json') as {
      cases: Array<{ name: string; payload: string; now: number; frame: string[] }>
    }
    assert.ok(cases.length >= 8)
    for (const c of cases) {
      assert.deepEqual(frameRows(screenFor(parseLogin(c.payload), c.now)), c.frame, c.name)
    }
    assert.ok(cases.some((c) => c.payload.includes('signin_required')))
  })

  test('sinceText switches from the time to the date after a day, like layout.py', () => {
    const s = parseLogin('{"state":"signin_required","since":"2026-11-25T09:30:05Z","pair":true}')
    assert.equal(s?.kind, 'signin_required')
    if (s?.kind !== 'signin_required') return
    assert.equal(sinceText(s, s.sinceEpoch + 86_399), 'Since 09:30 UTC')
    assert.equal(sinceText(s, s.sinceEpoch + 86_400), 'Since 2026-11-25')
  })

  test('Screen: a failed flow shows the end screen, then sign-in required; a clear blanks it', () => {
    const T = 1_795_600_000
    const signin = parseLogin('{"state":"signin_required","since":"2026-11-25T09:30:05Z","pair":true}')
    const pending = parseLogin(
      '{"state":"pending","user_code":"WDJB-MJHT","verification_uri":"https://example.com/device","expires_at":"2026-11-25T10:15:00Z"}',
    )
    const screen = new Screen(10)
    const kind = () => screen.state?.kind // a function: each call is checked afresh
    assert.equal(screen.apply(signin, T), true)
    assert.equal(kind(), 'signin_required')
    assert.equal(screen.apply(pending, T + 1), true)
    assert.equal(kind(), 'pending')
    assert.equal(screen.apply(parseLogin('{"state":"denied"}'), T + 2), true)
    assert.equal(screen.apply(parseLogin(''), T + 2), false)
    assert.equal(screen.apply(signin, T + 2), false)
    assert.equal(kind(), 'ended')
    assert.equal(screen.tick(T + 12), true)
    assert.equal(kind(), 'signin_required')
    assert.equal(screen.apply(parseLogin(''), T + 20), true)
    assert.equal(screen.state, null)
  })
})
