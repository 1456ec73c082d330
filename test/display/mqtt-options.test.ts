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

  test('the agent: persistent session (Clean Start off, session expiry), stable client id; login stays clean', async () => {
    const config = { url: 'mqtt://127.0.0.1:1883', topicPrefix: 'edgetoken', allowPair: false }
    const agent = await mqttClientOptions(config, {
      deviceId: 'gw-1',
      role: 'agent',
      sessionExpirySeconds: 86_400,
    })
    // MQTT 5 §3.1.2.4 / §3.1.2.11.2: the session is found again by client id, and outlives the
    // connection only with a Session Expiry Interval.
    assert.equal(agent.clientId, 'edgetoken-agent-gw-1')
    assert.equal(agent.clean, false)
    assert.deepEqual(agent.properties, { sessionExpiryInterval: 86_400 })
    const again = await mqttClientOptions(config, {
      deviceId: 'gw-1',
      role: 'agent',
      sessionExpirySeconds: 60,
    })
    assert.equal(again.clientId, agent.clientId, 'the next run finds the session')
    const long = 'd'.repeat(64)
    const v4 = await mqttClientOptions(
      { ...config, protocolVersion: 4 },
      { deviceId: long, role: 'agent', sessionExpirySeconds: 60 },
    )
    assert.equal(v4.clientId, `edgetoken-agent-${long}`, 'never cut: long ids must not collide')
    assert.equal(v4.clean, false)
    assert.equal(v4.properties, undefined, 'MQTT 3.1.1 has no CONNECT properties')

    const login = await mqttClientOptions(config, { deviceId: 'gw-1', role: 'login' })
    assert.equal(login.clean, true)
    assert.equal(login.properties, undefined)
    assert.match(login.clientId ?? '', /^login-gw-1-[0-9a-f]{8}$/)
    for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 32]) {
      await assert.rejects(mqttClientOptions(config, { deviceId: 'gw-1', sessionExpirySeconds: bad }), {
        name: 'TypeError',
        code: 'ERR_INVALID_ARG_VALUE',
      })
    }
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
