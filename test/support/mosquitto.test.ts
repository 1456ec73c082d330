import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { describe, test } from 'node:test'
import mqtt from 'mqtt'
import { clientOptions, startBroker, type TestBroker } from './mosquitto.js'
import { startRecorder } from './mqtt-recorder.js'

async function publishRetained(broker: TestBroker, topic: string, payload: string, version: 4 | 5 = 4) {
  const client = await mqtt.connectAsync(broker.url, clientOptions(broker, { protocolVersion: version }))
  try {
    await client.publishAsync(topic, payload, {
      qos: 1,
      retain: true,
      ...(version === 5 ? { properties: { messageExpiryInterval: 300 } } : {}),
    })
  } finally {
    await client.endAsync()
  }
}

function portAcceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

for (const tls of [false, true]) {
  describe(`test broker (${tls ? 'TLS + credentials' : 'plain'})`, () => {
    test('a retained publish is seen by a later recorder (MQTT 3.1.1)', async (t) => {
      const broker = await startBroker({ tls })
      t.after(() => broker.close())
      assert.match(broker.url, tls ? /^mqtts:\/\/127\.0\.0\.1:\d+$/ : /^mqtt:\/\/127\.0\.0\.1:\d+$/)
      if (tls) {
        assert.equal(broker.username, 'edge')
        assert.ok(broker.password && broker.password.length >= 16)
        assert.match(broker.tls?.ca.toString() ?? '', /BEGIN CERTIFICATE/)
      }
      await publishRetained(broker, 'edgetoken/dev1/status', 'online')
      const rec = await startRecorder(broker, 'edgetoken/dev1/#')
      t.after(() => rec.close())
      const m = await rec.waitFor((m) => m.topic === 'edgetoken/dev1/status')
      assert.equal(m.payload.toString(), 'online')
      assert.equal(m.retain, true)
      assert.equal(m.qos, 1)
    })

    test('MQTT 5: the message expiry property is visible', async (t) => {
      const broker = await startBroker({ tls })
      t.after(() => broker.close())
      if (broker.kind === 'aedes') return t.skip('aedes speaks MQTT 3.1.1 only')
      await publishRetained(broker, 'edgetoken/dev1/login', '{"state":"pending"}', 5)
      const rec = await startRecorder(broker, 'edgetoken/dev1/login', { protocolVersion: 5 })
      t.after(() => rec.close())
      const m = await rec.waitFor(() => true)
      assert.equal(m.retain, true)
      const expiry = m.properties?.messageExpiryInterval
      // The broker sends the remaining lifetime: at most what was set, more than zero.
      assert.ok(expiry !== undefined && expiry > 0 && expiry <= 300, `expiry ${expiry}`)

      // A live (non-retained) message arrives with retain false.
      const pub = await mqtt.connectAsync(broker.url, clientOptions(broker, { protocolVersion: 5 }))
      t.after(() => pub.endAsync())
      await pub.publishAsync('edgetoken/dev1/login', '{"state":"approved"}', { qos: 1 })
      const live = await rec.waitFor((m) => m.payload.toString().includes('approved'))
      assert.equal(live.retain, false)
    })
  })
}

describe('retained message clearing', () => {
  test('a zero-length retained publish reaches subscribers and leaves nothing retained', async (t) => {
    const broker = await startBroker()
    t.after(() => broker.close())
    await publishRetained(broker, 'edgetoken/dev1/login', '{"state":"pending"}')
    const live = await startRecorder(broker, 'edgetoken/dev1/login')
    t.after(() => live.close())
    await live.waitFor((m) => m.retain && m.payload.length > 0)
    await publishRetained(broker, 'edgetoken/dev1/login', '')
    const clear = await live.waitFor((m) => m.payload.length === 0)
    assert.equal(clear.retain, false) // delivered live, not from the store

    const later = await startRecorder(broker, 'edgetoken/dev1/#')
    t.after(() => later.close())
    await later.settle()
    assert.deepEqual(later.messages, [])
    // settle() really waits for retained messages: with one stored, it is there after settle().
    await publishRetained(broker, 'edgetoken/dev1/status', 'online')
    const third = await startRecorder(broker, 'edgetoken/dev1/#')
    t.after(() => third.close())
    await third.settle()
    assert.deepEqual(
      third.messages.map((m) => m.payload.toString()),
      ['online'],
    )
  })
})

describe('test broker credentials', () => {
  test('a wrong password is refused (3.1.1 and 5)', async (t) => {
    const broker = await startBroker({ tls: true })
    t.after(() => broker.close())
    const versions: Array<4 | 5> = broker.kind === 'mosquitto' ? [4, 5] : [4]
    for (const protocolVersion of versions) {
      await assert.rejects(
        mqtt.connectAsync(broker.url, clientOptions(broker, { protocolVersion, password: 'wrong' })),
        (err: Error & { code?: number }) => {
          // 3.1.1: 4 bad user name or password / 5 not authorized; 5: 134 / 135.
          assert.ok([4, 5, 134, 135].includes(err.code ?? -1), `code ${err.code}: ${err.message}`)
          return true
        },
      )
    }
  })

  test('a client that does not trust the test CA is refused', async (t) => {
    const broker = await startBroker({ tls: true })
    t.after(() => broker.close())
    const { ca: _ca, ...untrusting } = clientOptions(broker)
    await assert.rejects(mqtt.connectAsync(broker.url, untrusting), /certificate/i)
  })

  test('a plain broker with a username refuses anonymous clients', async (t) => {
    const broker = await startBroker({ username: 'sensor', password: 's3cret' })
    t.after(() => broker.close())
    assert.equal(broker.url.startsWith('mqtt://'), true)
    const { username: _u, password: _p, ...anonymous } = clientOptions(broker)
    await assert.rejects(mqtt.connectAsync(broker.url, anonymous))
    const ok = await mqtt.connectAsync(broker.url, clientOptions(broker))
    await ok.endAsync()
  })
})

describe('test broker lifecycle', () => {
  test('stop() frees the port and restart() serves again on the same port', async (t) => {
    const broker = await startBroker()
    t.after(() => broker.close())
    assert.equal(await portAcceptsConnections(broker.port), true)

    const client = mqtt.connect(broker.url, clientOptions(broker))
    t.after(() => client.endAsync(true))
    await new Promise<void>((resolve) => client.once('connect', () => resolve()))
    const lost = new Promise<void>((resolve) => client.once('close', () => resolve()))

    await broker.stop()
    await lost
    assert.equal(await portAcceptsConnections(broker.port), false)

    await broker.restart()
    assert.equal(await portAcceptsConnections(broker.port), true)
    // Retained state does not survive (persistence false): a fresh broker.
    await publishRetained(broker, 'edgetoken/dev1/status', 'online')
    const rec = await startRecorder(broker, 'edgetoken/dev1/status')
    t.after(() => rec.close())
    assert.equal((await rec.waitFor(() => true)).payload.toString(), 'online')
  })

  test('startBroker({ port }) reuses a given port; close() is idempotent', async (t) => {
    const first = await startBroker()
    const port = first.port
    await first.close()
    await first.close()
    const second = await startBroker({ port })
    t.after(() => second.close())
    assert.equal(second.port, port)
    assert.equal(await portAcceptsConnections(port), true)
  })
})
