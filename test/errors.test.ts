import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  ConfigError,
  EdgeTokenError,
  InvalidResponseError,
  isEdgeTokenError,
  OAuthServerError,
  StoreError,
  UnavailableError,
} from '../src/errors.js'

describe('error model', () => {
  test('every error carries a stable code and maps to a contract category', () => {
    assert.equal(new ConfigError('config: x').category, 'config')
    assert.equal(new StoreError('bad').category, 'store')
    assert.equal(new UnavailableError('down').category, 'unavailable')
    assert.equal(new InvalidResponseError('html').category, 'unavailable')
    assert.equal(new EdgeTokenError('ERR_SIGNIN_REQUIRED', 'x').category, 'signin_required')
    assert.equal(new EdgeTokenError('ERR_CANCELLED', 'x').category, 'cancelled')
    assert.equal(new EdgeTokenError('ERR_EXPIRED', 'x').category, 'expired')
    assert.equal(new EdgeTokenError('ERR_ACCESS_DENIED', 'x').category, 'denied')
  })

  test('raw bodies and causes are non-enumerable, so logging an error never prints a secret', () => {
    const secret = 'rt-SECRET-123'
    const errs = [
      new OAuthServerError('ERR_OAUTH', 'invalid_request', { status: 400, body: { refresh_token: secret } }),
      new InvalidResponseError('bad', { body: secret, status: 200 }),
      new EdgeTokenError('ERR_INTERNAL', 'x', { cause: new Error(secret) }),
    ]
    for (const err of errs) {
      assert.ok(!JSON.stringify(err).includes(secret))
      assert.ok(
        !Object.keys(err).some((k) =>
          String((err as unknown as Record<string, unknown>)[k]).includes(secret),
        ),
      )
    }
    assert.deepEqual((errs[0] as OAuthServerError).body, { refresh_token: secret })
  })

  test('OAuthServerError keeps error, description and status; its message is one printable line', () => {
    const err = new OAuthServerError('ERR_ACCESS_DENIED', 'access_denied', {
      status: 400,
      errorDescription: 'user said\nno \u001b[31m',
    })
    assert.equal(err.error, 'access_denied')
    assert.equal(err.status, 400)
    assert.equal(err.code, 'ERR_ACCESS_DENIED')
    assert.ok(!err.message.includes('\n') && !err.message.includes('\u001b'))
    assert.ok(isEdgeTokenError(err, 'ERR_ACCESS_DENIED'))
    assert.ok(!isEdgeTokenError(err, 'ERR_OAUTH'))
    assert.ok(!isEdgeTokenError(new Error('x')))
  })
})
