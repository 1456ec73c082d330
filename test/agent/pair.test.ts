/**
 * The pair-request policy while the device is signed in (issue 11 #1): a valid request is refused
 * as `signed-in` and counted, its nonce is spent, and it does not use up the rate limit of a later
 * request made once sign-in is required. The listener asks `signinRequired` per message (mosquitto).
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import mqtt from 'mqtt'
import { createPairGate, type PairRefusal, startPairListener } from '../../src/agent/pair.js'
import { clientOptions, startBroker, type TestBroker } from '../support/mosquitto.js'

const NOW = Date.parse('2026-11-25T10:00:00Z')

function pair(nonce: string, at = NOW): Uint8Array {
  return Buffer.from(JSON.stringify({ request: 'signin', nonce, at: new Date(at).toISOString() }))
}

describe('pair requests while signed in (issue 11 #1)', () => {
  test('issue 11 #1: the gate refuses a valid request as signed-in, spends its nonce, keeps the rate limit free', () => {
    const gate = createPairGate({ allow: true, minIntervalMs: 30_000, now: () => NOW })
    const refused = gate.check(pair('nonce-signed-1'), { signedIn: true })
    assert.equal(refused.ok ? 'ok' : refused.reason, 'signed-in')
    assert.equal(gate.counters['signed-in'], 1)
    assert.equal(gate.counters.accepted, 0)
    // The same button press must not count later, once sign-in is required.
    const replay = gate.check(pair('nonce-signed-1'))
    assert.equal(replay.ok ? 'ok' : replay.reason, 'replayed')
    // A refused request did not start the 30 s window: a new one is accepted at once.
    assert.equal(gate.check(pair('nonce-signed-2')).ok, true)
  })

  describe('listener', () => {
    let broker: TestBroker
    before(async () => {
      broker = await startBroker()
    })
    after(async () => {
      await broker?.close()
    })

    test('issue 11 #1: the listener asks signinRequired for each request and hands on only those made while required', async () => {
      const topic = `edgetoken/gw-${randomBytes(4).toString('hex')}/pair`
      const agent = await mqtt.connectAsync(broker.url, clientOptions(broker))
      const display = await mqtt.connectAsync(broker.url, clientOptions(broker))
      const gate = createPairGate({ allow: true, minIntervalMs: 0 })
      let required = false
      const accepted: string[] = []
      const refused: PairRefusal[] = []
      const listener = startPairListener({
        client: agent,
        topic,
        gate,
        busy: () => false,
        signinRequired: () => required,
        onPair: (request) => accepted.push(request.nonce),
        onRefused: (reason) => refused.push(reason),
      })
      try {
        await listener.ready
        await display.publishAsync(topic, Buffer.from(pair('nonce-while-in', Date.now())), { qos: 1 })
        while (refused.length + accepted.length < 1) await new Promise((r) => setTimeout(r, 20))
        required = true
        await display.publishAsync(topic, Buffer.from(pair('nonce-while-out', Date.now())), { qos: 1 })
        while (refused.length + accepted.length < 2) await new Promise((r) => setTimeout(r, 20))
        assert.deepEqual(refused, ['signed-in'])
        assert.deepEqual(accepted, ['nonce-while-out'])
      } finally {
        await listener.close()
        await agent.endAsync()
        await display.endAsync()
      }
    })
  })
})
