import assert from 'node:assert/strict'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { mqttClientOptions, mqttTopics } from '../../src/display/mqtt-options.js'
import { ConfigError } from '../../src/errors.js'

describe('MQTT options', () => {
  test('topics of a device', () => {
    assert.deepEqual(mqttTopics('site/a', 'gw-1'), {
      login: 'site/a/gw-1/login',
      status: 'site/a/gw-1/status',
      readings: 'site/a/gw-1/readings',
      pair: 'site/a/gw-1/pair',
    })
  })

  test('last will offline (retained, QoS 1), credentials, MQTT 5 by default, unique client ids', async () => {
    const config = {
      url: 'mqtt://127.0.0.1:1883',
      topicPrefix: 'edgetoken',
      username: 'u',
      password: 'p',
      allowPair: false,
    }
    const a = await mqttClientOptions(config, { deviceId: 'gw-1', role: 'login' })
    const b = await mqttClientOptions(config, { deviceId: 'gw-1', role: 'login' })
    assert.equal(a.protocolVersion, 5)
    assert.deepEqual(a.will, {
      topic: 'edgetoken/gw-1/status',
      payload: Buffer.from('offline'),
      qos: 1,
      retain: true,
    })
    assert.equal(a.username, 'u')
    assert.equal(a.password, 'p')
    assert.match(a.clientId ?? '', /^login-gw-1-[0-9a-f]{8}$/)
    assert.notEqual(a.clientId, b.clientId)
    assert.equal(a.ca, undefined)
    const noPresence = await mqttClientOptions(
      { ...config, protocolVersion: 4 },
      { deviceId: 'gw-1', presence: false },
    )
    assert.equal(noPresence.will, undefined)
    assert.equal(noPresence.protocolVersion, 4)
  })

  test('an unreadable TLS file is a config error naming the key', async () => {
    const missing = join(tmpdir(), 'edgetoken-no-such-ca.pem')
    await assert.rejects(
      mqttClientOptions(
        { url: 'mqtts://broker:8883', topicPrefix: 'edgetoken', caFile: missing, allowPair: false },
        { deviceId: 'gw-1' },
      ),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.key === 'mqtt.caFile' &&
        /^config: mqtt\.caFile cannot be read \(.*ENOENT\)$/.test(err.message),
    )
  })
})
