/**
 * Messages for requests that got no answer (issue 11 #1): the service, the host, the error code and
 * what to check, in one line; a proxy named by host and port only; 4xx refusals by a proxy final.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  describeNetworkFailure,
  ProxyTunnelError,
  timeoutMessage,
} from '../../../src/lib/http/network-errors.js'

const IDP = { name: 'the identity provider', setting: 'authority' }
const API = { name: 'the telemetry API', setting: 'telemetry.endpoint' }
const target = new URL('https://idp.example.com/.well-known/openid-configuration')
const coded = (code: string) => Object.assign(new Error(`getaddrinfo ${code} idp.example.com`), { code })

describe('issue 11 #1: network failure messages say what to check', () => {
  for (const code of ['ENOTFOUND', 'EAI_AGAIN', 'ECONNREFUSED', 'ETIMEDOUT', 'ECONNRESET']) {
    test(`${code}: names the identity provider, the host, the code, \`authority\`, DNS and the proxy variables`, () => {
      const failure = describeNetworkFailure(coded(code), target, IDP)
      assert.equal(
        failure.message,
        `the identity provider at idp.example.com is unreachable (${code}): ` +
          'check `authority` in the config, the network and DNS, and HTTPS_PROXY/NO_PROXY',
      )
      assert.equal(failure.retryable, true)
    })
  }

  test('the telemetry API is named with telemetry.endpoint', () => {
    const failure = describeNetworkFailure(
      coded('ENOTFOUND'),
      new URL('https://api.example.com:8443/ingest'),
      API,
    )
    assert.match(
      failure.message,
      /^the telemetry API at api\.example\.com:8443 is unreachable \(ENOTFOUND\): check `telemetry\.endpoint`/,
    )
  })

  test('a code that is not a plain error code is left out, and nothing but the code is quoted', () => {
    const failure = describeNetworkFailure(
      Object.assign(new Error('secret body'), { code: 'x y<script>' }),
      target,
      IDP,
    )
    assert.doesNotMatch(failure.message, /secret|script/)
    assert.match(failure.message, /^the identity provider at idp\.example\.com is unreachable: check/)
  })

  test('a proxy that refuses CONNECT with 4xx is named and final; with 5xx it may be retried', () => {
    const refused = describeNetworkFailure(
      new ProxyTunnelError('proxy.lan:3128', 'idp.example.com:443', 407, new Error('x')),
      target,
      IDP,
    )
    assert.match(
      refused.message,
      /^the proxy at proxy\.lan:3128 refused CONNECT \(407\) to idp\.example\.com:443 for the identity provider: check HTTPS_PROXY\/NO_PROXY/,
    )
    assert.equal(refused.retryable, false)
    const bad = describeNetworkFailure(
      new ProxyTunnelError('proxy.lan:3128', 'idp.example.com:443', 502, new Error('x')),
      target,
      IDP,
    )
    assert.equal(bad.retryable, true)
  })

  test('an http target names HTTP_PROXY; an unreachable proxy is named as such', () => {
    const failure = describeNetworkFailure(
      new ProxyTunnelError('proxy.lan:3128', 'idp.test:80', undefined, coded('ECONNREFUSED')),
      new URL('http://idp.test/'),
      IDP,
    )
    assert.equal(
      failure.message,
      'the proxy at proxy.lan:3128 is unreachable (ECONNREFUSED) for the identity provider: check HTTP_PROXY/NO_PROXY',
    )
  })

  test('a refused certificate names the host (and the proxy it came through), not the proxy as unreachable', () => {
    const direct = describeNetworkFailure(coded('CERT_HAS_EXPIRED'), target, IDP)
    assert.equal(
      direct.message,
      'the identity provider at idp.example.com presented a certificate that was refused (CERT_HAS_EXPIRED): ' +
        'check `authority` in the config and the system clock; to trust a private CA, set NODE_EXTRA_CA_CERTS to its PEM file',
    )
    assert.equal(direct.retryable, false)
    const proxied = describeNetworkFailure(
      new ProxyTunnelError(
        'proxy.lan:3128',
        'idp.example.com:443',
        undefined,
        coded('UNABLE_TO_VERIFY_LEAF_SIGNATURE'),
      ),
      target,
      IDP,
    )
    assert.match(
      proxied.message,
      /^the identity provider at idp\.example\.com through the proxy at proxy\.lan:3128 presented a certificate that was refused \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/,
    )
  })

  test('timeouts name the deadline in ms below a second, else in seconds', () => {
    assert.match(
      timeoutMessage(target, IDP, 300),
      /^the identity provider at idp\.example\.com did not answer within 300 ms: check `authority`/,
    )
    assert.match(
      timeoutMessage(target, API, 30_000),
      /did not answer within 30 s: check `telemetry\.endpoint`/,
    )
  })
})
