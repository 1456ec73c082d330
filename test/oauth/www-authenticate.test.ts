/**
 * The `WWW-Authenticate` parser (RFC 9110 §11.6.1), the Bearer challenge's error (RFC 6750 §3),
 * Entra ID's claims challenge and the claims requests built from it (issue 13).
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  claimsFromArgument,
  decodeClaimsChallenge,
  MAX_CLAIMS_BYTES,
  mergeClaims,
  parseClaims,
} from '../../src/oauth/claims.js'
import { bearerChallengeError, parseWwwAuthenticate } from '../../src/oauth/www-authenticate.js'

/** Microsoft's documented example (learn.microsoft.com/entra/identity-platform/claims-challenge). */
const ENTRA_EXAMPLE =
  'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3NlbnRpYWwiOnRydWUsInZhbHVlIjoiY3AxIn19fQ=="'
const ENTRA_CLAIMS = '{"access_token":{"acrs":{"essential":true,"value":"cp1"}}}'

describe('parseWwwAuthenticate (RFC 9110 §11.6.1)', () => {
  test('issue 13: RFC 9110 §11.6.1 several challenges, parameters and token68 in one header', () => {
    const challenges = parseWwwAuthenticate(
      'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple",, Negotiate abc+/d==, DPoP algs="ES256 PS256"',
    )
    assert.deepEqual(
      challenges.map((c) => ({ scheme: c.scheme, token68: c.token68, params: { ...c.params } })),
      [
        {
          scheme: 'newauth',
          token68: undefined,
          params: { realm: 'apps', type: '1', title: 'Login to "apps"' },
        },
        { scheme: 'basic', token68: undefined, params: { realm: 'simple' } },
        { scheme: 'negotiate', token68: 'abc+/d==', params: {} },
        { scheme: 'dpop', token68: undefined, params: { algs: 'ES256 PS256' } },
      ],
    )
  })

  test('issue 13: RFC 9110 §11.2 scheme and parameter names are case-insensitive; BWS around "="; repeated headers join', () => {
    const [bearer, other] = parseWwwAuthenticate(['BEARER Error = "invalid_token" ,\tREALM=api', 'Basic'])
    assert.equal(bearer?.scheme, 'bearer')
    assert.deepEqual({ ...bearer?.params }, { error: 'invalid_token', realm: 'api' })
    assert.equal(other?.scheme, 'basic')
    assert.deepEqual(parseWwwAuthenticate(''), [])
    // `name=` alone is a token68 with padding, not a parameter without a value.
    assert.equal(parseWwwAuthenticate('Bearer error=')[0]?.token68, 'error=')
  })

  test('issue 13: RFC 9110 §11.6.1 malformed headers are refused whole', () => {
    for (const bad of [
      'Bearer error="unterminated',
      'Bearer error="a", error="b"', // §11.2: a parameter at most once per challenge
      'Bearer =x',
      'Bearer error="a" realm="b"',
      '"quoted-scheme"',
      'Bearer error="a\u0001b"',
      `Bearer realm="${'x'.repeat(17 * 1024)}"`,
    ]) {
      assert.throws(() => parseWwwAuthenticate(bad), { code: 'ERR_INVALID_RESPONSE' }, bad)
    }
  })
})

describe('bearerChallengeError (RFC 6750 §3) and claims challenges', () => {
  test("issue 13: Entra ID's documented insufficient_claims challenge gives its decoded claims", () => {
    const challenge = bearerChallengeError(ENTRA_EXAMPLE)
    assert.equal(challenge?.error, 'insufficient_claims')
    assert.equal(challenge?.claims, ENTRA_CLAIMS)
  })

  test('issue 13: RFC 6750 §3 the first Bearer error wins; other schemes and error-less challenges are skipped', () => {
    assert.deepEqual(
      {
        ...bearerChallengeError(
          'Basic realm="x", Bearer realm="api", Bearer error="invalid_token", error_description="expired"',
        ),
      },
      { scheme: 'bearer', error: 'invalid_token', errorDescription: 'expired', claims: undefined },
    )
    assert.equal(bearerChallengeError(undefined), undefined)
    assert.equal(bearerChallengeError('Bearer realm="api"'), undefined)
    assert.equal(bearerChallengeError('Bearer error="a", error="b"'), undefined, 'malformed: no challenge')
  })

  test('issue 13: an insufficient_claims challenge whose claims are not a valid claims request counts as none', () => {
    const b64 = (text: string) => Buffer.from(text).toString('base64')
    for (const claims of [
      'not base64!',
      b64('[1,2]'),
      b64('{"access_token":"x"}'),
      b64('{"access_token":{"acrs":true}}'),
      b64('{not json'),
      Buffer.from([0xff, 0xfe, 0x7b]).toString('base64'),
    ]) {
      assert.equal(
        bearerChallengeError(`Bearer error="insufficient_claims", claims="${claims}"`),
        undefined,
        claims,
      )
    }
    assert.equal(bearerChallengeError('Bearer error="insufficient_claims"'), undefined)
  })
})

describe('claims requests (OpenID Connect Core §5.5)', () => {
  test('issue 13: OIDC Core §5.5 claims are a JSON object of objects of null-or-object claim requests, at most 16 KiB', () => {
    assert.equal(parseClaims(' { "id_token" : { "auth_time" : null } } '), '{"id_token":{"auth_time":null}}')
    for (const bad of ['[]', 'null', '"x"', '{"a":1}', '{"a":{"b":1}}', '{']) {
      assert.throws(() => parseClaims(bad), { code: 'ERR_INVALID_ARG_VALUE' }, bad)
    }
    const big = JSON.stringify({ access_token: { x: { value: 'v'.repeat(MAX_CLAIMS_BYTES) } } })
    assert.throws(() => parseClaims(big), { code: 'ERR_INVALID_ARG_VALUE' })
  })

  test('issue 13: a challenge decodes from standard or URL-safe base64, padded or not', () => {
    const json = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}'
    for (const encoded of [
      Buffer.from(json).toString('base64'),
      Buffer.from(json).toString('base64url'),
      Buffer.from(json).toString('base64').replace(/=+$/, ''),
    ]) {
      assert.equal(decodeClaimsChallenge(encoded), json)
    }
    assert.throws(() => decodeClaimsChallenge('abcde'), { code: 'ERR_INVALID_ARG_VALUE' })
  })

  test('issue 13: token --claims takes JSON or the challenge value as received', () => {
    assert.equal(claimsFromArgument(ENTRA_CLAIMS), ENTRA_CLAIMS)
    assert.equal(
      claimsFromArgument('eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3NlbnRpYWwiOnRydWUsInZhbHVlIjoiY3AxIn19fQ=='),
      ENTRA_CLAIMS,
    )
  })

  test('issue 13: client capabilities become access_token.xms_cc, merged with the challenge as MSAL merges them', () => {
    assert.equal(mergeClaims(undefined, undefined), undefined)
    assert.equal(mergeClaims(undefined, []), undefined)
    assert.equal(mergeClaims(undefined, ['cp1']), '{"access_token":{"xms_cc":{"values":["cp1"]}}}')
    assert.equal(mergeClaims(ENTRA_CLAIMS, undefined), ENTRA_CLAIMS)
    assert.deepEqual(
      JSON.parse(mergeClaims(`{"id_token":{"amr":null},${ENTRA_CLAIMS.slice(1)}`, ['cp1', 'cp1']) ?? ''),
      {
        id_token: { amr: null },
        access_token: { acrs: { essential: true, value: 'cp1' }, xms_cc: { values: ['cp1'] } },
      },
    )
    assert.throws(() => mergeClaims(undefined, ['has space']), { code: 'ERR_INVALID_ARG_VALUE' })
  })
})
