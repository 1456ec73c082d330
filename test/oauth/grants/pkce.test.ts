/**
 * PKCE (RFC 7636), the authorization request URL (RFC 6749 §4.1.1) and the checks on the
 * authorization response (RFC 6749 §4.1.2, §3.1, RFC 9207). Pure functions: no network.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { InvalidResponseError, OAuthServerError } from '../../../src/errors.js'
import type { AuthorizationServer } from '../../../src/oauth/authority.js'
import {
  buildAuthorizationUrl,
  codeChallengeS256,
  generateCodeVerifier,
  generateNonce,
  generateState,
  validateAuthorizationResponse,
} from '../../../src/oauth/grants/pkce.js'

const server: AuthorizationServer = Object.freeze({
  issuer: 'https://idp.test',
  dialect: 'oidc',
  tokenEndpoint: 'https://idp.test/token',
  authorizationEndpoint: 'https://idp.test/authorize?tenant=t1',
  jwksUri: 'https://idp.test/jwks',
})
const REDIRECT = 'http://127.0.0.1:8400/cb'
const CHALLENGE = 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM'

function rejectsWith(fn: () => unknown, check: (err: unknown) => boolean): void {
  assert.throws(fn, (err: unknown) => check(err))
}

describe('PKCE (RFC 7636)', () => {
  test('RFC 7636 Appendix B: the S256 challenge of the example verifier', () => {
    assert.equal(codeChallengeS256('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'), CHALLENGE)
  })

  test('RFC 7636 §4.1: verifiers are 43 unreserved characters from 32 random octets, fresh each time', () => {
    const seen = new Set<string>()
    for (let i = 0; i < 50; i += 1) {
      const v = generateCodeVerifier()
      assert.match(v, /^[A-Za-z0-9\-._~]{43}$/)
      seen.add(v)
    }
    assert.equal(seen.size, 50)
  })

  test('RFC 7636 §4.1: a verifier MUST be 43-128 unreserved characters; others are TypeErrors without the value', () => {
    for (const bad of [
      'short',
      'a'.repeat(42),
      'a'.repeat(129),
      `${'a'.repeat(42)}+`,
      `${'a'.repeat(42)} `,
    ]) {
      rejectsWith(
        () => codeChallengeS256(bad),
        (err) =>
          err instanceof TypeError &&
          (err as { code?: string }).code === 'ERR_INVALID_ARG_VALUE' &&
          !err.message.includes(bad),
      )
    }
    assert.equal(codeChallengeS256('a'.repeat(128)).length, 43)
  })

  test('state and nonce are 256-bit random base64url strings', () => {
    assert.match(generateState(), /^[A-Za-z0-9_-]{43}$/)
    assert.match(generateNonce(), /^[A-Za-z0-9_-]{43}$/)
    assert.notEqual(generateState(), generateState())
  })
})

describe('buildAuthorizationUrl (RFC 6749 §4.1.1, RFC 7636 §4.3)', () => {
  test('RFC 7636 §4.3: the request carries code_challenge and code_challenge_method=S256; RFC 6749 §3.1: the endpoint query is kept', () => {
    const url = buildAuthorizationUrl(server, {
      clientId: 'app',
      redirectUri: REDIRECT,
      scopes: ['openid', 'offline_access', 'api:read'],
      state: 'st',
      nonce: 'nn',
      codeChallenge: CHALLENGE,
      loginHint: 'ada@example.com',
    })
    assert.equal(url.origin + url.pathname, 'https://idp.test/authorize')
    assert.deepEqual(Object.fromEntries(url.searchParams), {
      tenant: 't1',
      response_type: 'code',
      client_id: 'app',
      redirect_uri: REDIRECT,
      scope: 'openid offline_access api:read',
      state: 'st',
      code_challenge: CHALLENGE,
      code_challenge_method: 'S256',
      nonce: 'nn',
      login_hint: 'ada@example.com',
    })
  })

  test('RFC 6749 §3.1.2: the redirect URI MUST be absolute and MUST NOT include a fragment', () => {
    const base = { clientId: 'app', scopes: ['openid'], state: 's', codeChallenge: CHALLENGE }
    for (const redirectUri of ['/cb', 'http://127.0.0.1/cb#frag', 'http://127.0.0.1/cb#']) {
      assert.throws(() => buildAuthorizationUrl(server, { ...base, redirectUri }), {
        name: 'TypeError',
        code: 'ERR_INVALID_ARG_VALUE',
      })
    }
  })

  test('RFC 8252 §7.3: plain http redirect URIs only on loopback; private-use schemes pass', () => {
    const base = { clientId: 'app', scopes: ['openid'], state: 's', codeChallenge: CHALLENGE }
    assert.throws(() => buildAuthorizationUrl(server, { ...base, redirectUri: 'http://example.com/cb' }), {
      code: 'ERR_INSECURE_URL',
    })
    for (const redirectUri of ['http://[::1]:9/cb', 'https://app.example/cb', 'com.example.app:/cb']) {
      assert.ok(buildAuthorizationUrl(server, { ...base, redirectUri }))
    }
  })

  test('an empty state, a non-S256 challenge and a server without an authorization endpoint are refused', () => {
    const base = {
      clientId: 'app',
      redirectUri: REDIRECT,
      scopes: ['openid'],
      state: 's',
      codeChallenge: CHALLENGE,
    }
    assert.throws(() => buildAuthorizationUrl(server, { ...base, state: '' }), {
      code: 'ERR_INVALID_ARG_VALUE',
    })
    assert.throws(() => buildAuthorizationUrl(server, { ...base, codeChallenge: 'plain-verifier' }), {
      code: 'ERR_INVALID_ARG_VALUE',
    })
    const { authorizationEndpoint: _, ...noAuthorize } = server
    assert.throws(() => buildAuthorizationUrl(noAuthorize, base), { code: 'ERR_CONFIG' })
  })
})

describe('validateAuthorizationResponse (RFC 6749 §4.1.2, RFC 9207)', () => {
  const STATE = 'state-4f1b2c'
  const CODE = 'code-secret-93ab'

  test('a matching state gives the code, state and iss', () => {
    const res = validateAuthorizationResponse(
      `${REDIRECT}?code=${CODE}&state=${STATE}&iss=https%3A%2F%2Fidp.test`,
      {
        expectedState: STATE,
        issuer: server.issuer,
        redirectUri: REDIRECT,
      },
    )
    assert.deepEqual({ ...res }, { code: CODE, state: STATE, iss: 'https://idp.test' })
  })

  test('RFC 6749 §10.12: a response whose state does not match the request MUST be rejected (message without secrets)', () => {
    for (const query of [`code=${CODE}&state=other`, `code=${CODE}`, `code=${CODE}&state=${STATE}x`]) {
      rejectsWith(
        () => validateAuthorizationResponse(`${REDIRECT}?${query}`, { expectedState: STATE }),
        (err) =>
          err instanceof InvalidResponseError &&
          err.code === 'ERR_INVALID_RESPONSE' &&
          /state/.test(err.message) &&
          !err.message.includes(CODE) &&
          !err.message.includes(STATE),
      )
    }
  })

  test('RFC 9207 §2.4: an iss that differs from the issuer MUST be rejected, before the state is looked at', () => {
    rejectsWith(
      () =>
        validateAuthorizationResponse(`${REDIRECT}?code=${CODE}&state=${STATE}&iss=https%3A%2F%2Fevil.test`, {
          expectedState: STATE,
          issuer: server.issuer,
        }),
      (err) => err instanceof InvalidResponseError && /iss/.test(err.message) && !err.message.includes(CODE),
    )
    // The Entra ID template matches any tenant GUID, and nothing else.
    const entra = 'https://login.microsoftonline.com/{tenantid}/v2.0'
    const tid = '72f988bf-86f1-41af-91ab-2d7cd011db47'
    const ok = validateAuthorizationResponse(
      `${REDIRECT}?code=c&state=${STATE}&iss=${encodeURIComponent(`https://login.microsoftonline.com/${tid}/v2.0`)}`,
      { expectedState: STATE, issuer: entra },
    )
    assert.equal(ok.code, 'c')
    assert.throws(
      () =>
        validateAuthorizationResponse(
          `${REDIRECT}?code=c&state=${STATE}&iss=${encodeURIComponent('https://login.microsoftonline.com/evil/v2.0')}`,
          { expectedState: STATE, issuer: entra },
        ),
      InvalidResponseError,
    )
  })

  test('RFC 6749 §3.1: response parameters MUST NOT be included more than once', () => {
    assert.throws(
      () =>
        validateAuthorizationResponse(`${REDIRECT}?code=a&code=b&state=${STATE}`, { expectedState: STATE }),
      (err: unknown) => err instanceof InvalidResponseError && /code is repeated/.test(err.message),
    )
  })

  test('RFC 6749 §4.1.2.1: an error response becomes an OAuthServerError (access_denied -> ERR_ACCESS_DENIED)', () => {
    assert.throws(
      () =>
        validateAuthorizationResponse(`${REDIRECT}?error=access_denied&error_description=no&state=${STATE}`, {
          expectedState: STATE,
        }),
      (err: unknown) =>
        err instanceof OAuthServerError && err.code === 'ERR_ACCESS_DENIED' && err.error === 'access_denied',
    )
    // An error with a foreign state is not ours: the state check wins.
    assert.throws(
      () =>
        validateAuthorizationResponse(`${REDIRECT}?error=access_denied&state=x`, { expectedState: STATE }),
      InvalidResponseError,
    )
  })

  test('a callback without a code, or at another path, is rejected', () => {
    assert.throws(
      () => validateAuthorizationResponse(`${REDIRECT}?state=${STATE}`, { expectedState: STATE }),
      {
        code: 'ERR_INVALID_RESPONSE',
      },
    )
    assert.throws(
      () =>
        validateAuthorizationResponse(`http://127.0.0.1:8400/other?code=c&state=${STATE}`, {
          expectedState: STATE,
          redirectUri: REDIRECT,
        }),
      { code: 'ERR_INVALID_RESPONSE' },
    )
  })
})
