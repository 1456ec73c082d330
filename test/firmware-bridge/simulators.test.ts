import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, test } from 'node:test'
import { Ajv2020 } from 'ajv/dist/2020.js'
import addFormats from 'ajv-formats'
import mqtt from 'mqtt'
import { startDisplaySimulator } from '../../firmware-bridge/simulators/display.js'
import { encodeReading, startSensorSimulator } from '../../firmware-bridge/simulators/sensor.js'
import { clientOptions, startBroker, type TestBroker } from '../support/mosquitto.js'
import { startRecorder } from '../support/mqtt-recorder.js'

const schemaUrl = new URL('../../firmware-bridge/schema/reading.schema.json', import.meta.url)

function readingValidator() {
  const ajv = new Ajv2020({ allErrors: true, strict: true })
  addFormats.default(ajv)
  return ajv.compile(JSON.parse(readFileSync(schemaUrl, 'utf8')))
}

async function publisher(t: { after: (fn: () => unknown) => void }, broker: TestBroker) {
  const client = await mqtt.connectAsync(broker.url, clientOptions(broker))
  t.after(() => client.endAsync(true))
  return client
}

const simAuth = (broker: TestBroker) => ({
  url: broker.url,
  ...(broker.tls ? { ca: broker.tls.ca } : {}),
  ...(broker.username !== undefined ? { username: broker.username } : {}),
  ...(broker.password !== undefined ? { password: broker.password } : {}),
})

describe('display simulator', () => {
  test('renders a retained pending code, then the end state, then a blank screen', async (t) => {
    const broker = await startBroker({ tls: true })
    t.after(() => broker.close())
    const pub = await publisher(t, broker)
    const expiresAt = new Date(Date.now() + 600_000).toISOString().replace(/\.\d+Z$/, 'Z')
    // Published before the display subscribes: the retained message must still reach it.
    await pub.publishAsync(
      'edgetoken/pi-01/login',
      JSON.stringify({
        state: 'pending',
        user_code: 'WDJB-MJHT',
        verification_uri: 'https://example.com/device',
        expires_at: expiresAt,
      }),
      { qos: 1, retain: true },
    )
    const rendered: string[] = []
    const sim = await startDisplaySimulator({
      ...simAuth(broker),
      topicPrefix: 'edgetoken',
      deviceId: 'pi-01',
      endHoldMs: 200,
      tickMs: 50,
      onRender: (frame) => rendered.push(frame),
    })
    t.after(() => sim.close())

    const pending = await sim.waitForFrame((f) => f.includes('W D J B -'))
    assert.match(pending, /M J H T/)
    assert.match(pending, /example\.com\/devi/)
    assert.match(pending, /Expires in (10:00|09:5\d)/)
    assert.equal(sim.state?.kind, 'pending')

    // The agent's ending: non-retained end state, then the zero-length retained clear.
    await pub.publishAsync('edgetoken/pi-01/login', JSON.stringify({ state: 'approved' }), { qos: 1 })
    await pub.publishAsync('edgetoken/pi-01/login', '', { qos: 1, retain: true })
    const ended = await sim.waitForFrame((f) => f.includes('Signed in'))
    const blank = await sim.waitForFrame(
      (f) => sim.frames.indexOf(f) > sim.frames.indexOf(ended) && !/[^\s|+-]/.test(f),
    )
    assert.ok(sim.frames.indexOf(pending) < sim.frames.indexOf(ended))
    assert.ok(sim.frames.indexOf(ended) < sim.frames.indexOf(blank))
    assert.equal(sim.state, null)
    assert.deepEqual(rendered, sim.frames)
    for (const f of sim.frames) {
      const lines = f.split('\n')
      assert.equal(lines.length, 10)
      for (const line of lines) assert.equal(line.length, 18)
    }
  })

  test('ignores payloads outside the contract (never shows a device_code)', async (t) => {
    const broker = await startBroker()
    t.after(() => broker.close())
    const sim = await startDisplaySimulator({ ...simAuth(broker), deviceId: 'pi-02', tickMs: 50 })
    t.after(() => sim.close())
    const pub = await publisher(t, broker)
    const base = {
      state: 'pending',
      user_code: 'SECRET-1',
      verification_uri: 'https://example.com/device',
      expires_at: new Date(Date.now() + 60_000).toISOString(),
    }
    await pub.publishAsync('edgetoken/pi-02/login', JSON.stringify({ ...base, device_code: 'dc' }), {
      qos: 1,
    })
    await pub.publishAsync('edgetoken/pi-02/login', 'not json', { qos: 1 })
    await pub.publishAsync('edgetoken/pi-02/login', JSON.stringify({ ...base, user_code: 'GOOD' }), {
      qos: 1,
    })
    await sim.waitForFrame((f) => f.includes('G O O D'))
    assert.equal(
      sim.frames.some((f) => f.includes('SECRET')),
      false,
    )
    assert.equal(sim.frames.length >= 1, true)
  })

  test('renders a retained signin_required notice; a pending code replaces it, a clear blanks it', async (t) => {
    const broker = await startBroker()
    t.after(() => broker.close())
    const pub = await publisher(t, broker)
    const since = new Date(Date.now() - 60_000).toISOString().replace(/\.\d+Z$/, 'Z')
    await pub.publishAsync(
      'edgetoken/pi-04/login',
      JSON.stringify({ state: 'signin_required', since, pair: true }),
      { qos: 1, retain: true },
    )
    const sim = await startDisplaySimulator({ ...simAuth(broker), deviceId: 'pi-04', tickMs: 50 })
    t.after(() => sim.close())
    const notice = await sim.waitForFrame((f) => f.includes('Sign-in required'))
    assert.match(notice, /Press PAIR/)
    assert.match(notice, new RegExp(`Since ${since.slice(11, 16)} UTC`))
    assert.equal(sim.state?.kind, 'signin_required')

    await pub.publishAsync(
      'edgetoken/pi-04/login',
      JSON.stringify({
        state: 'pending',
        user_code: 'BCDFGHJK',
        verification_uri: 'https://example.com/device',
        expires_at: new Date(Date.now() + 600_000).toISOString(),
      }),
      { qos: 1, retain: true },
    )
    await sim.waitForFrame((f) => f.includes('B C D F G H J K'))
    await pub.publishAsync(
      'edgetoken/pi-04/login',
      JSON.stringify({ state: 'signin_required', since, pair: false }),
      { qos: 1, retain: true },
    )
    const noPair = await sim.waitForFrame((f) => f.includes('edgetoken login'))
    assert.doesNotMatch(noPair, /PAIR/)
    await pub.publishAsync('edgetoken/pi-04/login', '', { qos: 1, retain: true })
    await sim.waitForFrame((f) => sim.frames.indexOf(f) > sim.frames.indexOf(noPair) && !/[^\s|+-]/.test(f))
    assert.equal(sim.state, null)
  })

  test('a wrong password is refused at start', async (t) => {
    const broker = await startBroker({ tls: true })
    t.after(() => broker.close())
    await assert.rejects(startDisplaySimulator({ ...simAuth(broker), password: 'wrong', deviceId: 'pi-03' }))
  })
})

describe('sensor simulator', () => {
  test('publishes `count` schema-valid readings with increasing seq (QoS 1, not retained)', async (t) => {
    const broker = await startBroker({ tls: true })
    t.after(() => broker.close())
    const rec = await startRecorder(broker, 'edgetoken/pi-01/readings')
    t.after(() => rec.close())
    const sim = await startSensorSimulator({
      ...simAuth(broker),
      deviceId: 'pi-01',
      sensor: 'greenhouse-1',
      intervalMs: 10,
      count: 5,
    })
    t.after(() => sim.close())
    await sim.done
    assert.equal(sim.published, 5)
    await rec.waitFor(() => rec.messages.length >= 5)
    const validate = readingValidator()
    const seqs: number[] = []
    for (const m of rec.messages) {
      assert.equal(m.retain, false)
      assert.equal(m.qos, 1)
      assert.ok(m.payload.length <= 16 * 1024)
      const reading = JSON.parse(m.payload.toString('utf8')) as { sensor: string; seq: number; at: string }
      assert.equal(validate(reading), true, JSON.stringify(validate.errors))
      assert.equal(reading.sensor, 'greenhouse-1')
      seqs.push(reading.seq)
    }
    assert.deepEqual(seqs, [0, 1, 2, 3, 4])
    await sim.close()
  })

  test('stops on close() and uses injected values and clock', async (t) => {
    const broker = await startBroker()
    t.after(() => broker.close())
    const rec = await startRecorder(broker, 'plant/+/readings')
    t.after(() => rec.close())
    const sim = await startSensorSimulator({
      url: broker.url,
      topicPrefix: 'plant',
      deviceId: 'd9',
      sensor: 'door',
      intervalMs: 5,
      startSeq: 100,
      values: (seq) => ({ open: seq % 2 === 0, reason: 'test' }),
      now: () => new Date('2026-11-25T10:00:00Z'),
    })
    await rec.waitFor(() => rec.messages.length >= 3)
    await sim.close()
    await sim.done
    const count = sim.published
    const first = JSON.parse(rec.messages[0]?.payload.toString() ?? '{}') as Record<string, unknown>
    assert.deepEqual(first, {
      sensor: 'door',
      at: '2026-11-25T10:00:00.000Z',
      seq: 100,
      values: { open: true, reason: 'test' },
    })
    assert.equal(readingValidator()(first), true)
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.equal(sim.published, count)
  })

  test('encodeReading refuses what the contract forbids', () => {
    const at = '2026-11-25T10:00:00Z'
    assert.throws(() => encodeReading({ sensor: '', at, values: { a: 1 } }), RangeError)
    assert.throws(() => encodeReading({ sensor: 's'.repeat(65), at, values: { a: 1 } }), RangeError)
    assert.throws(() => encodeReading({ sensor: 's', at, values: {} }), RangeError)
    assert.throws(() => encodeReading({ sensor: 's', at, values: { big: 'x'.repeat(17_000) } }), RangeError)
    assert.equal(
      encodeReading({ sensor: 's', at, values: { a: 1 } }).toString(),
      `{"sensor":"s","at":"${at}","values":{"a":1}}`,
    )
  })
})
