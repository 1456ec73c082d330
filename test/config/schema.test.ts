import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
// ajv comes with conf; tests only (the loader stays import-free for the cached `token` path).
import Ajv2020Module from 'ajv/dist/2020.js'
import { fileLayer } from '../../src/config/rules.js'
import { ConfigError } from '../../src/errors.js'

const configDir = fileURLToPath(new URL('../../config/', import.meta.url))
const Ajv2020 = Ajv2020Module.default ?? Ajv2020Module

async function compile() {
  const schema = JSON.parse(await readFile(join(configDir, 'schema.json'), 'utf8')) as Record<string, unknown>
  const ajv = new Ajv2020({ allErrors: true, strict: true, strictRequired: false })
  return ajv.compile(schema)
}

function loaderAccepts(data: unknown): boolean {
  try {
    fileLayer(data, tmpdir())
    return true
  } catch (err) {
    if (err instanceof ConfigError) return false
    throw err
  }
}

describe('config/schema.json and the loader agree', () => {
  test('every example config is valid for both', async () => {
    const validate = await compile()
    const files = (await readdir(join(configDir, 'examples'))).filter((f) => f.endsWith('.json'))
    assert.deepEqual(files.sort(), ['entra-id.json', 'local-oidc-provider.json', 'mqtt-tls.json'])
    for (const file of files) {
      const data = JSON.parse(await readFile(join(configDir, 'examples', file), 'utf8')) as unknown
      assert.equal(validate(data), true, `${file}: ${JSON.stringify(validate.errors)}`)
      assert.equal(loaderAccepts(data), true, file)
    }
  })

  const base = { authority: 'https://idp.example.com', clientId: 'c' }
  const valid: Array<[string, unknown]> = [
    ['minimal', {}],
    ['loopback http authority', { authority: 'http://127.0.0.1:4000' }],
    ['localhost http authority with path', { authority: 'http://localhost:4000/realms/x' }],
    ['loopback mqtt with password', { mqtt: { url: 'mqtt://127.0.0.1:1883', username: 'u', password: 'p' } }],
    ['display none', { display: [] }],
    ['mqtt display with mqtt', { display: ['mqtt'], mqtt: { url: 'mqtts://b:8883' } }],
    ['tls files', { mqtt: { url: 'mqtts://b', caFile: 'ca.pem', certFile: 'c.pem', keyFile: 'k.pem' } }],
    ['password file', { mqtt: { url: 'mqtts://b', username: 'u', passwordFile: 'mqtt-password' } }],
    ['password file, loopback', { mqtt: { url: 'mqtt://[::1]', username: 'u', passwordFile: '/run/p' } }],
    [
      'subscriptions of existing firmware',
      {
        mqtt: {
          url: 'mqtt://b',
          subscriptions: [
            'zigbee2mqtt/+',
            'tele/+/SENSOR',
            'shellies/#',
            'esphome/+/sensor/+/state',
            'a b/ü',
            '+',
          ],
        },
      },
    ],
    ['no subscriptions', { mqtt: { url: 'mqtt://b', subscriptions: [] } }],
  ]
  const invalid: Array<[string, unknown]> = [
    ['unknown top-level key', { ...base, clientID: 'x' }],
    ['unknown mqtt key', { mqtt: { url: 'mqtt://b', urll: 'x' } }],
    ['http authority to a remote host', { authority: 'http://idp.example.com' }],
    ['authority with a query', { authority: 'https://idp.example.com/?a=1' }],
    ['ws broker url', { mqtt: { url: 'ws://broker' } }],
    ['broker url with credentials', { mqtt: { url: 'mqtt://u:p@broker' } }],
    ['mqtt without url', { mqtt: { topicPrefix: 'x' } }],
    ['wildcard in deviceId', { deviceId: 'dev+1' }],
    ['slash in deviceId', { deviceId: 'a/b' }],
    ['wildcard in topicPrefix', { mqtt: { url: 'mqtt://b', topicPrefix: 'a/#' } }],
    ['scope with a space', { scopes: ['a b'] }],
    ['unknown display', { display: ['tv'] }],
    ['mqtt display without mqtt', { display: ['mqtt'] }],
    ['timeout 0', { timeoutSeconds: 0 }],
    ['timeout not an integer', { timeoutSeconds: 1.5 }],
    ['password without username', { mqtt: { url: 'mqtts://b', password: 'p' } }],
    ['certFile without keyFile', { mqtt: { url: 'mqtts://b', certFile: 'c.pem' } }],
    ['caFile over plain mqtt', { mqtt: { url: 'mqtt://b', caFile: 'ca.pem' } }],
    [
      'password over plain mqtt to a remote host',
      { mqtt: { url: 'mqtt://b.lan', username: 'u', password: 'p' } },
    ],
    ['protocol version 3', { mqtt: { url: 'mqtt://b', protocolVersion: 3 } }],
    ['allowPair as a string', { mqtt: { url: 'mqtt://b', allowPair: 'yes' } }],
    ['http telemetry endpoint to a remote host', { telemetry: { endpoint: 'http://api.example.com/x' } }],
    ['control character in clientId', { clientId: 'a\u001bb' }],
    ['array instead of object', []],
    [
      'password and passwordFile',
      { mqtt: { url: 'mqtts://b', username: 'u', password: 'p', passwordFile: 'f' } },
    ],
    ['passwordFile without username', { mqtt: { url: 'mqtts://b', passwordFile: 'f' } }],
    [
      'passwordFile over plain mqtt to a remote host',
      { mqtt: { url: 'mqtt://b.lan', username: 'u', passwordFile: 'f' } },
    ],
    ['MQTT 5 §4.7.1: # not the last level', { mqtt: { url: 'mqtt://b', subscriptions: ['a/#/b'] } }],
    ['MQTT 5 §4.7.1: # inside a level', { mqtt: { url: 'mqtt://b', subscriptions: ['a/b#'] } }],
    ['MQTT 5 §4.7.1: + inside a level', { mqtt: { url: 'mqtt://b', subscriptions: ['tele/plug+/SENSOR'] } }],
    ['MQTT 5 §4.7.3: an empty filter', { mqtt: { url: 'mqtt://b', subscriptions: [''] } }],
    ['MQTT 5 §4.7.3: NUL in a filter', { mqtt: { url: 'mqtt://b', subscriptions: ['a\u0000b'] } }],
    ['a shared subscription', { mqtt: { url: 'mqtt://b', subscriptions: ['$share/g/tele/+/SENSOR'] } }],
    ['subscriptions as a string', { mqtt: { url: 'mqtt://b', subscriptions: 'tele/+/SENSOR' } }],
    ['a subscription that is not a string', { mqtt: { url: 'mqtt://b', subscriptions: [7] } }],
  ]

  test('valid configs are accepted by both', async () => {
    const validate = await compile()
    for (const [name, data] of valid) {
      assert.equal(validate(data), true, `schema rejected ${name}: ${JSON.stringify(validate.errors)}`)
      assert.equal(loaderAccepts(data), true, `loader rejected ${name}`)
    }
  })

  test('invalid configs are rejected by both', async () => {
    const validate = await compile()
    for (const [name, data] of invalid) {
      assert.equal(validate(data), false, `schema accepted ${name}`)
      assert.equal(loaderAccepts(data), false, `loader accepted ${name}`)
    }
  })
})
