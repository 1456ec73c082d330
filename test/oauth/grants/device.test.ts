/**
 * RFC 8628 device authorization grant: response validation and the polling state machine, with an
 * injected clock and sleep and the HTTP faked by a MockAgent (no real network, every expectation
 * used, no request without one).
 */
import assert from 'node:assert/strict'
import { beforeEach, describe, type TestContext, test } from 'node:test'
import { exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose'
import type { MockAgent } from 'undici'
import {
  EdgeTokenError,
  InvalidResponseError,
  OAuthServerError,
  UnavailableError,
} from '../../../src/errors.js'
import type { AuthorizationServer } from '../../../src/oauth/authority.js'
import {
  type DeviceAuthorization,
  pollDeviceAuthorization,
  processDeviceAuthorizationResponse,
  startDeviceAuthorization,
} from '../../../src/oauth/grants/device.js'
import type { HttpResponse } from '../../../src/oauth/http.js'
import { clearJwksCache } from '../../../src/oauth/jwks.js'
import { JSON_HEADERS, mockHttp } from '../../support/mock-http.js'

const ORIGIN = 'https://idp.test'
const server: AuthorizationServer = Object.freeze({
  issuer: ORIGIN,
  dialect: 'oidc',
  tokenEndpoint: `${ORIGIN}/token`,
  deviceAuthorizationEndpoint: `${ORIGIN}/device/auth`,
  jwksUri: `${ORIGIN}/jwks`,
})
const client = { clientId: 'device-client' }
const DEVICE_CODE = 'dc-secret-1234567890'

const goodBody = (extra: Record<string, unknown> = {}) => ({
  device_code: DEVICE_CODE,
  user_code: 'WDJB-MJHT',
  verification_uri: 'https://idp.test/device',
  verification_uri_complete: 'https://idp.test/device?user_code=WDJB-MJHT',
  expires_in: 600,
  interval: 5,
  ...extra,
})

function response(
  status: number,
  body: unknown,
  headers: Record<string, string> = JSON_HEADERS,
): HttpResponse {
  return {
    url: new URL(`${ORIGIN}/device/auth`),
    status,
    headers,
    body: typeof body === 'string' ? body : JSON.stringify(body),
  }
}

/** A fake clock whose sleep advances time instantly, recording each wait. */
function fakeClock(start = 1_000_000) {
  let now = start
  const sleeps: number[] = []
  return {
    start,
    now: () => now,
    sleeps,
    sleep: async (ms: number, signal: AbortSignal | undefined) => {
      if (signal?.aborted) throw signal.reason
      sleeps.push(ms)
      now += ms
    },
  }
}

type Step =
  | { status: number; body: unknown; headers?: Record<string, string> }
  | { timeout: true }
  | { networkError: true }

/**
 * Scripts the token endpoint: one interceptor per expected poll, recording the (fake) time at which
 * each poll arrived. An unexpected extra poll fails the test (`failOnUnmatched`): without that it
 * would reach the poller as a network error, which it absorbs as a back-off.
 */
function scriptPolls(agent: MockAgent, clock: { now: () => number }, steps: Step[]): number[] {
  const times: number[] = []
  const pool = agent.get(ORIGIN)
  for (const step of steps) {
    const interceptor = pool.intercept({
      path: '/token',
      method: 'POST',
      body: (b) => b.includes(`device_code=${DEVICE_CODE}`) && b.includes('grant_type=urn'),
    })
    if ('networkError' in step) {
      // replyWithError has no callback: this poll's time is known from onPoll only.
      interceptor.replyWithError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))
    } else if ('timeout' in step) {
      interceptor
        .reply(() => {
          times.push(clock.now())
          return {
            statusCode: 400,
            data: { error: 'authorization_pending' },
            responseOptions: { headers: JSON_HEADERS },
          }
        })
        .delay(500)
    } else {
      interceptor.reply(() => {
        times.push(clock.now())
        return {
          statusCode: step.status,
          data: JSON.stringify(step.body),
          responseOptions: { headers: { ...JSON_HEADERS, ...step.headers } },
        }
      })
    }
  }
  return times
}

const pending = { status: 400, body: { error: 'authorization_pending' } }
const slowDown = { status: 400, body: { error: 'slow_down' } }
const success = { status: 200, body: { access_token: 'at-1', token_type: 'Bearer', expires_in: 300 } }

function flowWith(clock: { now: () => number }, extra: Record<string, unknown> = {}): DeviceAuthorization {
  return processDeviceAuthorizationResponse(response(200, goodBody(extra)), {
    now: clock.now,
    scopes: ['openid'],
  })
}

function relative(times: number[], start: number): number[] {
  return times.map((t) => (t - start) / 1000)
}

function gaps(times: number[], start: number): number[] {
  return times.map((t, i) => (t - (i === 0 ? start : (times[i - 1] ?? start))) / 1000)
}

async function poll(t: TestContext, extra: Record<string, unknown>, steps: Step[], timeoutMs?: number) {
  const agent = mockHttp(t)
  const clock = fakeClock()
  const flow = flowWith(clock, extra)
  const times = scriptPolls(agent, clock, steps)
  const events: number[] = []
  const result = pollDeviceAuthorization(server, client, flow, {
    sleep: clock.sleep,
    now: clock.now,
    timeoutMs,
    onPoll: (event) => events.push(event.at),
  })
  return { clock, flow, times, events, result }
}

describe('RFC 8628 polling', () => {
  test('§3.2 interval defaults to 5 seconds when absent', async (t) => {
    const { clock, flow, times, result } = await poll(t, { interval: undefined }, [pending, success])
    assert.equal(flow.intervalSeconds, 5)
    const tokens = await result
    assert.equal(tokens.accessToken, 'at-1')
    assert.deepEqual(relative(times, clock.start), [5, 10])
  })

  test('§3.5 first poll one interval after the start, not at once; pending keeps the interval', async (t) => {
    const { clock, times, result } = await poll(t, { interval: 3 }, [pending, pending, pending, success])
    await result
    assert.deepEqual(relative(times, clock.start), [3, 6, 9, 12])
    assert.ok(
      clock.sleeps.every((ms) => ms === 3000),
      'every wait is the 3 s interval',
    )
  })

  test('§3.5 slow_down adds 5 seconds for this and all later polls', async (t) => {
    const { clock, times, result } = await poll(t, { interval: 2 }, [
      pending,
      slowDown,
      pending,
      pending,
      success,
    ])
    await result
    assert.deepEqual(gaps(times, clock.start), [2, 2, 7, 7, 7])
  })

  test('§3.5 slow_down twice adds 5 seconds each time', async (t) => {
    const { clock, times, result } = await poll(t, { interval: 1 }, [slowDown, slowDown, pending, success])
    await result
    assert.deepEqual(gaps(times, clock.start), [1, 6, 11, 11])
  })

  test('§3.5 authorization_pending keeps polling; access_denied stops with ERR_ACCESS_DENIED', async (t) => {
    const { times, result } = await poll(t, { interval: 1 }, [
      pending,
      { status: 400, body: { error: 'access_denied' } },
    ])
    await assert.rejects(result, (err: unknown) => {
      assert.ok(err instanceof OAuthServerError, 'an OAuthServerError')
      assert.equal(err.code, 'ERR_ACCESS_DENIED')
      assert.equal(err.category, 'denied')
      assert.ok(!JSON.stringify(err).includes(DEVICE_CODE), 'no device code in the error')
      return true
    })
    assert.equal(times.length, 2)
  })

  for (const [error, code] of [
    ['authorization_declined', 'ERR_ACCESS_DENIED'],
    ['expired_token', 'ERR_EXPIRED'],
    ['invalid_grant', 'ERR_OAUTH'],
    ['invalid_client', 'ERR_CONFIG'],
    ['bad_verification_code', 'ERR_OAUTH'],
  ] as const) {
    test(`§3.5 any other error stops polling: ${error} -> ${code}`, async (t) => {
      const { times, result } = await poll(t, { interval: 1 }, [{ status: 400, body: { error } }])
      await assert.rejects(result, { code })
      assert.equal(times.length, 1)
    })
  }

  test('§3.5 connection timeout makes the client back off (interval doubles)', async (t) => {
    const { clock, events, result } = await poll(
      t,
      { interval: 2 },
      [{ timeout: true }, { networkError: true }, pending, success],
      100,
    )
    await result
    // timeout -> 4 s, connection reset -> 8 s, then the backed-off interval stays.
    assert.deepEqual(gaps(events, clock.start), [2, 4, 8, 8])
  })

  test('§3.5 back-off on repeated connection failures doubles up to 300 s and stays there', async (t) => {
    const failures: Step[] = Array.from({ length: 10 }, () => ({ networkError: true }))
    const { clock, events, result } = await poll(t, { interval: 2, expires_in: 86400 }, [
      ...failures,
      success,
    ])
    await result
    assert.deepEqual(gaps(events, clock.start), [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300])
  })

  test('§3.5 a sleep that overruns the expiry (a stalled process, as the clock counts it) sends no poll: ERR_EXPIRED', async (t) => {
    const agent = mockHttp(t, { failOnUnmatched: true })
    const clock = fakeClock()
    const flow = flowWith(clock, { interval: 5, expires_in: 600 })
    const times = scriptPolls(agent, clock, [pending, pending])
    const sleeps: number[] = []
    // The third wait (5 s asked) ends 20 minutes later: the device code died meanwhile. The injected
    // clock stands for the monotonic one here; a real suspend, which CLOCK_MONOTONIC does not count,
    // is covered in test/faults/clock-jumps.test.ts (one more poll, then the IdP's expired_token).
    const sleep = async (ms: number) => {
      sleeps.push(ms)
      await clock.sleep(sleeps.length === 3 ? ms + 1_200_000 : ms, undefined)
    }
    const outcomes: string[] = []
    await assert.rejects(
      pollDeviceAuthorization(server, client, flow, {
        sleep,
        now: clock.now,
        onPoll: (event) => outcomes.push(event.outcome),
      }),
      { code: 'ERR_EXPIRED' },
    )
    assert.deepEqual(relative(times, clock.start), [5, 10])
    assert.deepEqual(outcomes, ['pending', 'pending'], 'no poll after the oversleep')
    assert.deepEqual(sleeps, [5000, 5000, 5000])
  })

  test('RFC 9110 §10.2.3 Retry-After on 429 is honoured for the next poll', async (t) => {
    const { clock, times, result } = await poll(t, { interval: 2 }, [
      { status: 429, body: { error: 'too_many' }, headers: { 'retry-after': '30' } },
      pending,
      success,
    ])
    await result
    assert.deepEqual(gaps(times, clock.start), [2, 30, 2])
  })

  test('RFC 9110 §10.2.3 Retry-After on 503 is honoured; without it the client backs off (RFC 8628 §3.5)', async (t) => {
    const { clock, times, result } = await poll(t, { interval: 2 }, [
      { status: 503, body: 'down', headers: { 'content-type': 'text/plain', 'retry-after': '11' } },
      { status: 503, body: 'down', headers: { 'content-type': 'text/plain' } },
      success,
    ])
    await result
    assert.deepEqual(gaps(times, clock.start), [2, 11, 4])
  })

  test('§3.5 no poll after the code expires: ERR_EXPIRED at the expiry', async (t) => {
    const { clock, flow, times, result } = await poll(t, { interval: 3, expires_in: 10 }, [
      pending,
      pending,
      pending,
    ])
    await assert.rejects(result, (err: unknown) => {
      assert.ok(err instanceof EdgeTokenError, 'an EdgeTokenError')
      assert.equal(err.code, 'ERR_EXPIRED')
      return true
    })
    assert.deepEqual(relative(times, clock.start), [3, 6, 9])
    assert.ok(
      times.every((at) => at < flow.expiresAt),
      'no poll at or after the expiry',
    )
    // It waited out the code's life before reporting, and not longer.
    assert.equal(clock.now(), flow.expiresAt)
  })

  test('§3.5 slow_down past the expiry ends polling without another request', async (t) => {
    const { clock, flow, times, result } = await poll(t, { interval: 2, expires_in: 6 }, [slowDown])
    await assert.rejects(result, { code: 'ERR_EXPIRED' })
    assert.deepEqual(relative(times, clock.start), [2])
    assert.equal(clock.now(), flow.expiresAt)
  })

  test('an aborted signal cancels while waiting, without a poll', async (t) => {
    mockHttp(t, { failOnUnmatched: true })
    const clock = fakeClock()
    const flow = flowWith(clock)
    const controller = new AbortController()
    const sleep = async (_ms: number, signal: AbortSignal | undefined) => {
      controller.abort()
      if (signal?.aborted) throw signal.reason
    }
    await assert.rejects(
      pollDeviceAuthorization(server, client, flow, { sleep, now: clock.now, signal: controller.signal }),
      { code: 'ERR_CANCELLED' },
    )
  })

  test('the real default sleep is cancellable', async (t) => {
    mockHttp(t, { failOnUnmatched: true })
    const flow = processDeviceAuthorizationResponse(response(200, goodBody({ interval: 60 })))
    // A 60 s interval: only the abort can end this before the test runner's timeout.
    await assert.rejects(pollDeviceAuthorization(server, client, flow, { signal: AbortSignal.timeout(50) }), {
      code: 'ERR_CANCELLED',
    })
  })

  test('a flow not made by startDeviceAuthorization is refused', async () => {
    const forged = {
      ...goodBody(),
      userCode: 'X',
      verificationUri: 'https://x',
      expiresAt: 0,
      intervalSeconds: 5,
      scopes: [],
    }
    await assert.rejects(pollDeviceAuthorization(server, client, forged), (err: unknown) => {
      assert.ok(err instanceof TypeError, 'a TypeError')
      assert.equal((err as TypeError & { code?: unknown }).code, 'ERR_INVALID_ARG_VALUE')
      return true
    })
  })
})

describe('RFC 8628 §3.5 the device code is spent once the token response arrives', () => {
  let privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey']
  let jwk: JWK
  beforeEach(async () => {
    clearJwksCache()
    if (!jwk) {
      const pair = await generateKeyPair('ES256', { extractable: true })
      privateKey = pair.privateKey
      jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' }
    }
  })
  const approved = async (clock: { now: () => number }) => {
    const iat = Math.floor(clock.now() / 1000)
    const idToken = await new SignJWT({ sub: 'user-1', iat, exp: iat + 600 })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(ORIGIN)
      .setAudience(client.clientId)
      .sign(privateKey)
    return {
      status: 200,
      body: { access_token: 'at-1', token_type: 'Bearer', expires_in: 300, id_token: idToken },
    }
  }

  test('JWKS down at approval: no second poll with the used code; a clear ERR_UNAVAILABLE', async (t) => {
    const agent = mockHttp(t, { failOnUnmatched: true })
    const clock = fakeClock()
    const flow = flowWith(clock, { interval: 2 })
    // Exactly one poll is scripted: a re-poll of the spent code would find no interceptor.
    const times = scriptPolls(agent, clock, [await approved(clock)])
    agent
      .get(ORIGIN)
      .intercept({ path: '/jwks' })
      .replyWithError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))
      .times(3)
    const outcomes: string[] = []
    await assert.rejects(
      pollDeviceAuthorization(server, client, flow, {
        sleep: clock.sleep,
        now: clock.now,
        onPoll: (e) => outcomes.push(e.outcome),
      }),
      (err: unknown) => {
        assert.ok(err instanceof EdgeTokenError, 'an EdgeTokenError')
        assert.equal(err.code, 'ERR_UNAVAILABLE')
        assert.match(err.message, /id_token cannot be verified/)
        assert.ok(!err.message.includes(DEVICE_CODE), 'no device code in the message')
        return true
      },
    )
    assert.equal(times.length, 1)
    assert.deepEqual(outcomes, [], 'the failed approval is not reported as an unavailable poll')
    // One poll interval, then the JWKS retries (1 s, 2 s), never a poll back-off.
    assert.deepEqual(clock.sleeps, [2000, 1000, 2000])
  })

  test('JWKS briefly down at approval: verified after a retry, still one poll', async (t) => {
    const agent = mockHttp(t, { failOnUnmatched: true })
    const clock = fakeClock()
    const flow = flowWith(clock, { interval: 2 })
    const times = scriptPolls(agent, clock, [pending, await approved(clock)])
    const pool = agent.get(ORIGIN)
    pool.intercept({ path: '/jwks' }).reply(503, 'down', { headers: { 'content-type': 'text/plain' } })
    pool.intercept({ path: '/jwks' }).reply(200, { keys: [jwk] }, { headers: JSON_HEADERS })
    const tokens = await pollDeviceAuthorization(server, client, flow, { sleep: clock.sleep, now: clock.now })
    assert.equal(tokens.idTokenClaims?.sub, 'user-1')
    assert.equal(times.length, 2)
  })
})

describe('RFC 8628 §3.2 device authorization response validation', () => {
  const invalid = (name: string, body: unknown, field: RegExp, status = 200, headers = JSON_HEADERS) =>
    test(name, () => {
      assert.throws(
        () => processDeviceAuthorizationResponse(response(status, body, headers)),
        (err: unknown) => {
          assert.ok(err instanceof InvalidResponseError, String(err))
          assert.equal(err.code, 'ERR_INVALID_RESPONSE')
          assert.match(err.message, field)
          assert.ok(!err.message.includes(DEVICE_CODE), 'no device code in the message')
          return true
        },
      )
    })

  invalid(
    'user_code with a bidi override is rejected (cannot reorder text on screen)',
    goodBody({ user_code: 'ABCD\u202eHGFE' }),
    /user_code/,
  )
  invalid('user_code with a zero-width space is rejected', goodBody({ user_code: 'AB\u200bCD' }), /user_code/)
  invalid(
    'a message with a bidi isolate is rejected',
    goodBody({ message: 'Go to \u2067evil\u2069 now' }),
    /message/,
  )
  invalid(
    'a verification_uri with a byte-order mark is rejected',
    goodBody({ verification_uri: 'https://idp.test/\ufeffdevice' }),
    /verification_uri/,
  )
  invalid(
    'a user_code with an Arabic letter mark is rejected',
    goodBody({ user_code: 'AB\u061cCD' }),
    /user_code/,
  )

  test('an internationalised verification host is returned as punycode (url.href)', () => {
    const body = goodBody({
      verification_uri: 'https://pаypal.example/device',
      verification_uri_complete: 'https://pаypal.example/device?user_code=WDJB-MJHT',
    })
    const flow = processDeviceAuthorizationResponse(response(200, body))
    assert.equal(flow.verificationUri, 'https://xn--pypal-4ve.example/device')
    assert.equal(flow.verificationUriComplete, 'https://xn--pypal-4ve.example/device?user_code=WDJB-MJHT')
  })

  test('a valid response is accepted, times made absolute, device_code kept private', () => {
    const flow = processDeviceAuthorizationResponse(response(200, goodBody({ message: 'Go to the page' })), {
      now: () => 5000,
      scopes: ['a'],
    })
    assert.equal(flow.userCode, 'WDJB-MJHT')
    assert.equal(flow.verificationUri, 'https://idp.test/device')
    assert.equal(flow.verificationUriComplete, 'https://idp.test/device?user_code=WDJB-MJHT')
    assert.equal(flow.expiresAt, 5000 + 600_000)
    assert.equal(flow.intervalSeconds, 5)
    assert.equal(flow.message, 'Go to the page')
    assert.ok(Object.isFrozen(flow), 'the flow is frozen')
    assert.ok(!JSON.stringify(flow).includes(DEVICE_CODE), 'no device code in the serialised flow')
    assert.ok(!Object.values(flow).includes(DEVICE_CODE), 'no device code among the values of the flow')
  })

  test('interval and expires_in sent as strings are normalised', () => {
    const flow = processDeviceAuthorizationResponse(
      response(200, goodBody({ interval: '7', expires_in: '900' })),
      {
        now: () => 0,
      },
    )
    assert.equal(flow.intervalSeconds, 7)
    assert.equal(flow.expiresAt, 900_000)
  })

  test('verification_url (pre-RFC spelling) is accepted as verification_uri', () => {
    const body = goodBody({ verification_uri: undefined, verification_url: 'https://idp.test/device' })
    assert.equal(
      processDeviceAuthorizationResponse(response(200, body)).verificationUri,
      'https://idp.test/device',
    )
  })

  test('http verification_uri is allowed for loopback hosts', () => {
    const body = goodBody({
      verification_uri: 'http://127.0.0.1:8080/device',
      verification_uri_complete: undefined,
    })
    assert.equal(
      processDeviceAuthorizationResponse(response(200, body)).verificationUri,
      'http://127.0.0.1:8080/device',
    )
  })

  invalid('interval 0 is rejected (no busy polling)', goodBody({ interval: 0 }), /interval/)
  invalid('a negative interval is rejected', goodBody({ interval: -5 }), /interval/)
  invalid('an absurd interval (> 3600 s) is rejected', goodBody({ interval: 86400 }), /interval/)
  invalid('a non-numeric interval is rejected', goodBody({ interval: 'soon' }), /interval/)
  invalid('expires_in 0 is rejected', goodBody({ expires_in: 0 }), /expires_in/)
  invalid('expires_in missing is rejected', goodBody({ expires_in: undefined }), /expires_in/)
  invalid('an absurd expires_in is rejected', goodBody({ expires_in: 10 ** 9 }), /expires_in/)
  invalid('device_code missing is rejected', goodBody({ device_code: undefined }), /device_code/)
  invalid('device_code of the wrong type is rejected', goodBody({ device_code: 42 }), /device_code/)
  invalid('user_code missing is rejected', goodBody({ user_code: undefined }), /user_code/)
  invalid(
    'user_code with an ANSI escape is rejected',
    goodBody({ user_code: '\u001b[2J\u001b[31mPWNED' }),
    /user_code/,
  )
  invalid('user_code with a newline is rejected', goodBody({ user_code: 'ABCD\nEFGH' }), /user_code/)
  invalid('an overlong user_code is rejected', goodBody({ user_code: 'A'.repeat(65) }), /user_code/)
  invalid(
    'verification_uri missing is rejected',
    goodBody({ verification_uri: undefined }),
    /verification_uri/,
  )
  invalid(
    'a non-https verification_uri is rejected',
    goodBody({ verification_uri: 'http://evil.example/device' }),
    /verification_uri/,
  )
  invalid(
    'a javascript: verification_uri is rejected',
    goodBody({ verification_uri: 'javascript:alert(1)' }),
    /verification_uri/,
  )
  invalid(
    'a data: verification_uri_complete is rejected',
    goodBody({ verification_uri_complete: 'data:text/html,<script>x</script>' }),
    /verification_uri_complete/,
  )
  invalid(
    'a verification_uri with credentials is rejected',
    goodBody({ verification_uri: 'https://user:pw@idp.test/device' }),
    /verification_uri/,
  )
  invalid(
    'a message with control characters is rejected',
    goodBody({ message: 'hi\u001b]0;x\u0007' }),
    /message/,
  )
  invalid('an overlong message is rejected', goodBody({ message: 'm'.repeat(2000) }), /message/)
  invalid('a JSON array is rejected', [1, 2], /not a JSON object/)
  invalid(
    'an HTML page is rejected as such',
    '<!doctype html><html><body>Log in to the hotel Wi-Fi</body></html>',
    /HTML page, not JSON \(captive portal\?\)/,
    200,
    { 'content-type': 'text/html' },
  )
  invalid('a wrong content type is rejected', 'device_code=x', /content-type/, 200, {
    'content-type': 'application/x-www-form-urlencoded',
  })

  test('an OAuth error response becomes an OAuthServerError', () => {
    assert.throws(
      () =>
        processDeviceAuthorizationResponse(
          response(400, { error: 'invalid_scope', error_description: 'no' }),
        ),
      (err: unknown) =>
        err instanceof OAuthServerError &&
        err.code === 'ERR_CONFIG' &&
        err.category === 'config' &&
        err.error === 'invalid_scope' &&
        /invalid_scope: no/.test(err.message),
    )
  })

  test('RFC 9110 §10.2.3 a 503 with Retry-After becomes an UnavailableError carrying it', () => {
    assert.throws(
      () =>
        processDeviceAuthorizationResponse(
          response(503, 'x', { 'content-type': 'text/plain', 'retry-after': '9' }),
        ),
      (err: unknown) => err instanceof UnavailableError && err.retryAfterSeconds === 9 && err.status === 503,
    )
  })
})

describe('device authorization request over HTTP', () => {
  const recording = () => {
    const sleeps: number[] = []
    return { sleeps, sleep: async (ms: number) => void sleeps.push(ms) }
  }

  test('RFC 9110 §10.2.3: a 429 with Retry-After is retried after that many seconds', async (t) => {
    const pool = mockHttp(t, { failOnUnmatched: true }).get(ORIGIN)
    pool
      .intercept({ path: '/device/auth', method: 'POST' })
      .reply(429, 'busy', { headers: { 'content-type': 'text/plain', 'retry-after': '3' } })
    pool.intercept({ path: '/device/auth', method: 'POST' }).reply(200, goodBody(), { headers: JSON_HEADERS })
    const { sleeps, sleep } = recording()
    const flow = await startDeviceAuthorization(server, client, ['openid'], { sleep })
    assert.equal(flow.userCode, 'WDJB-MJHT')
    assert.deepEqual(sleeps, [3000])
  })

  test('RFC 9110 §10.2.3: unavailable on every attempt ends after 3 with the last Retry-After kept', async (t) => {
    const pool = mockHttp(t, { failOnUnmatched: true }).get(ORIGIN)
    pool
      .intercept({ path: '/device/auth', method: 'POST' })
      .replyWithError(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))
    pool
      .intercept({ path: '/device/auth', method: 'POST' })
      .reply(503, 'down', { headers: { 'content-type': 'text/plain', 'retry-after': '4' } })
      .times(2)
    const { sleeps, sleep } = recording()
    await assert.rejects(startDeviceAuthorization(server, client, [], { sleep }), (err: unknown) => {
      assert.ok(err instanceof UnavailableError, 'an UnavailableError')
      assert.equal(err.status, 503)
      assert.equal(err.retryAfterSeconds, 4)
      return true
    })
    assert.deepEqual(sleeps, [1000, 4000])
  })

  test('an OAuth error is not retried', async (t) => {
    mockHttp(t, { failOnUnmatched: true })
      .get(ORIGIN)
      .intercept({ path: '/device/auth', method: 'POST' })
      .reply(401, { error: 'invalid_client' }, { headers: JSON_HEADERS })
    const { sleeps, sleep } = recording()
    await assert.rejects(startDeviceAuthorization(server, client, [], { sleep }), { code: 'ERR_CONFIG' })
    assert.deepEqual(sleeps, [])
  })

  test('sends client_id and scope as a form and validates the answer', async (t) => {
    const agent = mockHttp(t, { failOnUnmatched: true })
    let sent = ''
    agent
      .get(ORIGIN)
      .intercept({ path: '/device/auth', method: 'POST' })
      .reply((opts) => {
        sent = String(opts.body)
        return {
          statusCode: 200,
          data: JSON.stringify(goodBody()),
          responseOptions: { headers: JSON_HEADERS },
        }
      })
    const flow = await startDeviceAuthorization(server, client, ['openid', 'offline_access'])
    assert.equal(flow.userCode, 'WDJB-MJHT')
    const params = new URLSearchParams(sent)
    assert.equal(params.get('client_id'), 'device-client')
    assert.equal(params.get('scope'), 'openid offline_access')
  })

  test('a server without a device endpoint is a config error', async () => {
    const { deviceAuthorizationEndpoint: _, ...rest } = server
    await assert.rejects(startDeviceAuthorization(rest, client, []), { code: 'ERR_CONFIG' })
  })

  test('a 10 MB device authorization response hits the size cap with a typed error', async (t) => {
    const agent = mockHttp(t, { failOnUnmatched: true })
    agent
      .get(ORIGIN)
      .intercept({ path: '/device/auth', method: 'POST' })
      .reply(200, Buffer.alloc(10 * 1024 * 1024, 0x20), { headers: JSON_HEADERS })
    await assert.rejects(startDeviceAuthorization(server, client, []), (err: unknown) => {
      assert.ok(err instanceof InvalidResponseError, 'an InvalidResponseError')
      assert.match(err.message, /larger than 1048576 bytes/)
      return true
    })
  })

  test('a redirect is not followed', async (t) => {
    const agent = mockHttp(t, { failOnUnmatched: true })
    agent
      .get(ORIGIN)
      .intercept({ path: '/device/auth', method: 'POST' })
      .reply(302, '', { headers: { location: 'https://evil.example/device/auth' } })
    await assert.rejects(startDeviceAuthorization(server, client, []), {
      code: 'ERR_INVALID_RESPONSE',
      message: /redirect \(302\)/,
    })
  })
})
