/**
 * The daemon's MQTT side (src/agent/daemon/daemon-mqtt.ts) against a real mosquitto: it is started (and so
 * the daemon announces `ready`) only once the broker acknowledged its subscriptions, so a reading or
 * pair request published from then on arrives even on a first start, when the broker has no
 * session of ours to queue it in.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import mqtt from 'mqtt'
import { startDaemonMqtt } from '../../../src/agent/daemon/daemon-mqtt.js'
import { openSpool, type Spool } from '../../../src/telemetry/spool/spool.js'
import { clientOptions, startBroker, type TestBroker } from '../../support/mosquitto.js'
import { freePort } from '../../support/net.js'

describe('daemon MQTT start', () => {
  let broker: TestBroker
  let dir: string
  let spool: Spool
  before(async () => {
    broker = await startBroker()
    dir = await mkdtemp(join(tmpdir(), 'edgetoken-daemon-mqtt-'))
    spool = await openSpool(dir)
  })
  after(async () => {
    await spool?.close()
    await broker?.close()
    await rm(dir, { recursive: true, force: true })
  })

  const output = { log: () => {}, warn: () => {} }

  test('resolves once the readings and pair subscriptions are acknowledged', async () => {
    const controller = new AbortController()
    const started = await startDaemonMqtt({
      config: {
        url: broker.url,
        topicPrefix: 'edgetoken',
        allowPair: true,
        ...(broker.username ? { username: broker.username, password: broker.password } : {}),
      },
      deviceId: `gw-sub-${process.pid}`,
      spool,
      signal: controller.signal,
      output,
      pair: { busy: () => false, signinRequired: () => true, onPair: async () => {} },
    })
    const settled = (p: Promise<unknown> | undefined) => {
      let done = false
      p?.then(
        () => {
          done = true
        },
        () => {},
      )
      return () => done
    }
    const ingestDone = settled(started.ingest.ready)
    const pairDone = settled(started.pairListener?.ready)
    // One turn of the microtask queue: an already settled promise has run its callbacks by then.
    await Promise.resolve()
    assert.ok(started.client.connected)
    assert.equal(ingestDone(), true, 'the readings subscription was not acknowledged yet')
    assert.equal(pairDone(), true, 'the pair subscription was not acknowledged yet')
    controller.abort()
    await started.ingest.close({ unsubscribe: false })
    await started.pairListener?.close()
    await started.client.endAsync()
  })

  test('issue 11 #2: the configured subscriptions are acknowledged before the start resolves, and each message is spooled as {topic, received_at, payload}', async () => {
    const controller = new AbortController()
    const logs: string[] = []
    const started = await startDaemonMqtt({
      config: {
        url: broker.url,
        topicPrefix: 'edgetoken',
        allowPair: false,
        subscriptions: ['tele/+/SENSOR', 'shellies/+/sensor/temperature'],
        ...(broker.username ? { username: broker.username, password: broker.password } : {}),
      },
      deviceId: `gw-subs-${process.pid}`,
      spool,
      signal: controller.signal,
      output: { log: (line) => logs.push(line), warn: () => {} },
    })
    const publisher = await mqtt.connectAsync(broker.url, clientOptions(broker))
    try {
      await publisher.publishAsync('tele/plug-1/SENSOR', JSON.stringify({ ENERGY: { Power: 5 } }), { qos: 1 })
      await publisher.publishAsync('shellies/ht-1/sensor/temperature', JSON.stringify({ value: 21.5 }), {
        qos: 1,
      })
      const deadline = Date.now() + 10_000
      while (started.ingest.counters.accepted < 2 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20))
      }
      await started.ingest.idle()
      const batch = await spool.readBatch({ maxRecords: 10 })
      const records = (batch?.records ?? []).map((r) => JSON.parse(r) as Record<string, unknown>)
      if (batch) await spool.ack(batch)
      assert.deepEqual(
        records.map(({ topic, payload }) => ({ topic, payload })),
        [
          { topic: 'tele/plug-1/SENSOR', payload: { ENERGY: { Power: 5 } } },
          { topic: 'shellies/ht-1/sensor/temperature', payload: { value: 21.5 } },
        ],
      )
      for (const r of records)
        assert.match(String(r.received_at), /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/)
      assert.ok(
        logs.some((l) => l.includes('tele/+/SENSOR, shellies/+/sensor/temperature')),
        logs.join('\n'),
      )
    } finally {
      await publisher.endAsync()
      controller.abort()
      await started.ingest.close({ unsubscribe: false })
      await started.client.endAsync()
    }
  })

  test('an unreachable broker does not hold the start until the bound: the first failed attempt ends the wait', async () => {
    const controller = new AbortController()
    const warnings: string[] = []
    const started = await startDaemonMqtt({
      config: { url: `mqtt://127.0.0.1:${await freePort()}`, topicPrefix: 'edgetoken', allowPair: false },
      deviceId: `gw-down-${process.pid}`,
      spool,
      signal: controller.signal,
      output: { log: () => {}, warn: (line) => warnings.push(line) },
    })
    assert.equal(started.client.connected, false)
    let ready = false
    // It rejects once the client is ended below: that is not this test's concern.
    started.ingest.ready.then(
      () => {
        ready = true
      },
      () => {},
    )
    await Promise.resolve()
    assert.equal(ready, false, 'it returned on the failed attempt, not on a subscription')
    controller.abort()
    await started.ingest.close({ unsubscribe: false })
    started.client.end(true)
  })
})
