import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import * as edgetoken from '../src/index.js'

test('the package entry exports the public library API', () => {
  for (const name of [
    'PublicClient',
    'ConfidentialClient',
    'clientCredentialsGrant',
    'buildAuthorizationUrl',
    'startDeviceAuthorization',
    'pollDeviceAuthorization',
    'resolveAuthority',
    'refreshTokenGrant',
    'openTokenStore',
    'acquireTokenSilent',
    'openSpool',
    'Uploader',
    'createReceiver',
    'EdgeTokenError',
    'OAuthServerError',
  ]) {
    assert.equal(typeof (edgetoken as Record<string, unknown>)[name], 'function', name)
  }
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    exports: { '.': { import: string; types: string } }
    bin: { edgetoken: string }
  }
  assert.equal(pkg.exports['.'].import, './dist/bundle/index.js')
  assert.equal(pkg.exports['.'].types, './dist/lib/index.d.ts')
  assert.equal(pkg.bin.edgetoken, 'dist/cli.js')
})
