import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { backoffDelayMs } from '../../src/lib/backoff.js'
import { MAX_RETRY_AFTER_SECONDS, parseRetryAfter } from '../../src/lib/http/retry-after.js'
import { assertSecureUrl, isLoopbackHost, secureUrl } from '../../src/lib/url.js'
import { isObject, isPrintable, parseJson } from '../../src/lib/validate.js'

describe('url policy', () => {
  test('https anywhere, http only to loopback', () => {
    assert.ok(secureUrl('https://login.example.com/x'))
    assert.ok(secureUrl('http://127.0.0.1:3000'))
    assert.ok(secureUrl('http://localhost:3000'))
    assert.ok(secureUrl('http://[::1]:3000'))
    assert.equal(secureUrl('http://example.com'), undefined)
    assert.equal(secureUrl('http://127.0.0.1.evil.com'), undefined)
    assert.equal(secureUrl('javascript:alert(1)'), undefined)
    assert.equal(secureUrl('not a url'), undefined)
    assert.ok(isLoopbackHost('127.1.2.3'))
    assert.throws(() => assertSecureUrl('http://idp.example', 'authority'), {
      code: 'ERR_INSECURE_URL',
      message: /authority must be an https:\/\/ URL \(http:\/\/ only for loopback hosts\)/,
    })
  })
})

describe('Retry-After (RFC 9110 §10.2.3)', () => {
  test('delay-seconds and HTTP-date, bounded', () => {
    assert.equal(parseRetryAfter('7'), 7)
    assert.equal(parseRetryAfter(' 0 '), 0)
    assert.equal(parseRetryAfter('99999999'), MAX_RETRY_AFTER_SECONDS)
    const now = Date.parse('2026-11-25T10:00:00Z')
    assert.equal(parseRetryAfter('Wed, 25 Nov 2026 10:00:30 GMT', now), 30)
    assert.equal(parseRetryAfter('Wed, 25 Nov 2026 09:00:00 GMT', now), 0)
    assert.equal(parseRetryAfter('-5'), undefined)
    assert.equal(parseRetryAfter('soon'), undefined)
    assert.equal(parseRetryAfter(undefined), undefined)
  })
})

describe('back-off', () => {
  test('grows exponentially with jitter between half and the full value, and is capped', () => {
    assert.equal(backoffDelayMs(0, { random: () => 0 }), 500)
    assert.equal(backoffDelayMs(0, { random: () => 0.999999 }), 1000)
    assert.equal(backoffDelayMs(3, { random: () => 0 }), 4000)
    assert.equal(backoffDelayMs(50, { random: () => 0.999999, capMs: 60_000 }), 60_000)
  })
})

describe('validation helpers', () => {
  test('isObject, isPrintable, parseJson', () => {
    assert.ok(isObject({}))
    assert.ok(!isObject([]))
    assert.ok(!isObject(null))
    assert.ok(isPrintable('WDJB-MJHT'))
    assert.ok(!isPrintable('ab\u001b[2Jcd'))
    assert.ok(!isPrintable('a\nb'))
    assert.equal(parseJson('{'), undefined)
    assert.deepEqual(parseJson('{"a":1}'), { a: 1 })
  })
})
