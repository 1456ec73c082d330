import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import {
  connectMqtt,
  mqttClientOptions,
  mqttTopics,
  readPasswordFile,
} from '../../src/display/mqtt-options.js'
import { ConfigError } from '../../src/errors.js'
import { startBroker } from '../support/mosquitto.js'

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
    assert.deepEqual(agent.properties, { maximumPacketSize: 65_536, sessionExpiryInterval: 86_400 })
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
    assert.deepEqual(login.properties, { maximumPacketSize: 65_536 }, 'no session expiry')
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

describe('issue 11 #7: the broker password from a file', () => {
  let dir: string
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgetoken-mqtt-password-'))
  })
  after(() => rm(dir, { recursive: true, force: true }))

  const file = async (name: string, content: string | Buffer) => {
    const path = join(dir, name)
    await writeFile(path, content, { mode: 0o600 })
    return path
  }
  /** Rejects with a ConfigError for mqtt.passwordFile whose message matches and never holds `secret`. */
  const refuses = async (path: string, why: RegExp, secret = 'hunter2') => {
    await assert.rejects(readPasswordFile(path), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err))
      assert.equal(err.key, 'mqtt.passwordFile')
      assert.match(err.message, why)
      assert.ok(!`${err.message} ${JSON.stringify(err)}`.includes(secret), err.message)
      return true
    })
  }

  test('one trailing newline is stripped (LF or CRLF), nothing else', async () => {
    assert.equal(await readPasswordFile(await file('lf', 'hunter2\n')), 'hunter2')
    assert.equal(await readPasswordFile(await file('crlf', 'hunter2\r\n')), 'hunter2')
    assert.equal(await readPasswordFile(await file('none', ' hunter2 ')), ' hunter2 ')
    await refuses(await file('two', 'hunter2\n\n'), /holds control characters/)
    await refuses(await file('inner', 'hunter2\nhunter3'), /holds control characters/)
  })

  test('a FIFO, a directory, an oversized, empty or non-UTF-8 file is refused, without echoing it', async () => {
    const fifo = join(dir, 'fifo')
    execFileSync('mkfifo', [fifo])
    // Opening a FIFO for reading would block until a writer came: refused without waiting.
    await refuses(fifo, /is not a regular file$/)
    await mkdir(join(dir, 'adir'))
    await refuses(join(dir, 'adir'), /is not a regular file$/)
    await refuses(await file('big', `hunter2${'x'.repeat(5000)}`), /is larger than 4096 bytes$/)
    await refuses(await file('long', 'hunter2'.repeat(200)), /holds more than 1024 characters$/)
    await refuses(await file('empty', '\n'), /is empty$/)
    await refuses(
      await file('latin1', Buffer.from([0x68, 0xfc, 0x6e, 0x74, 0x65, 0x72, 0x32])),
      /is not UTF-8 text$/,
    )
    await refuses(join(dir, 'missing'), /cannot be read \(ENOENT\)$/)
    // A symlink to a regular file is followed (Kubernetes and Docker secrets are symlinks).
    await symlink(join(dir, 'lf'), join(dir, 'link'))
    assert.equal(await readPasswordFile(join(dir, 'link')), 'hunter2')
  })

  test('the client connects to a real broker with the password from mqtt.passwordFile', async () => {
    const broker = await startBroker({ username: 'edge', password: 'from-a-file' })
    try {
      const passwordFile = await file('broker', 'from-a-file\n')
      const config = {
        url: broker.url,
        topicPrefix: 'edgetoken',
        allowPair: false,
        username: 'edge',
        passwordFile,
      }
      const options = await mqttClientOptions(config, { deviceId: 'gw-pw' })
      assert.equal(options.password, 'from-a-file')
      const client = await connectMqtt(config, {
        deviceId: 'gw-pw',
        presence: false,
        reconnectBaseMs: 60_000,
      })
      try {
        if (!client.connected) {
          await new Promise((resolve, reject) => {
            client.once('connect', resolve)
            client.once('error', reject)
          })
        }
        assert.equal(client.connected, true)
      } finally {
        await client.endAsync()
      }
    } finally {
      await broker.close()
    }
  })
})
