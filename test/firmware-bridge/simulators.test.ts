import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, test } from 'node:test'
import { Ajv2020 } from 'ajv/dist/2020.js'
import addFormats from 'ajv-formats'
import mqtt from 'mqtt'
import { countdownText, createDisplayConsole } from '../../firmware-bridge/simulators/console.js'
import { startDisplaySimulator } from '../../firmware-bridge/simulators/display.js'
import { boxed, frameRows, screenFor } from '../../firmware-bridge/simulators/layout.js'
import { type LoginState, parseLogin } from '../../firmware-bridge/simulators/login.js'
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
    assert.ok(sim.frames.indexOf(pending) < sim.frames.indexOf(ended), 'pending before the end screen')
    assert.ok(sim.frames.indexOf(ended) < sim.frames.indexOf(blank), 'the end screen before the blank one')
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

const ERASE = '\r\u001b[2K'
const T0 = Date.UTC(2026, 10, 25, 10, 0, 0)

function pendingState(expiresInSeconds: number): LoginState {
  const state = parseLogin(
    JSON.stringify({
      state: 'pending',
      user_code: 'WDJB-MJHT',
      verification_uri: 'https://example.com/device',
      expires_at: new Date(T0 + expiresInSeconds * 1000).toISOString(),
    }),
  )
  assert.ok(state, 'a contract pending message')
  return state
}

/**
 * Drives a console as the simulator does: `onRender` once per distinct frame, a tick a second.
 *
 * @returns the clock's setter and what was written.
 */
function drive(tty: boolean) {
  let clock = T0
  const writes: string[] = []
  const out = createDisplayConsole({
    write: (s) => writes.push(s),
    tty,
    label: 'display | ',
    now: () => clock,
  })
  let last = ''
  const show = (state: LoginState | null) => {
    const frame = boxed(frameRows(screenFor(state, Math.floor(clock / 1000))))
    if (frame !== last || state === null) out.render(frame, state)
    last = frame
  }
  return {
    out,
    writes,
    show,
    at(ms: number) {
      clock = T0 + ms
    },
  }
}

describe('display console', () => {
  test('issue 11: the countdown ticks each second, from expires_at', () => {
    const state = pendingState(600)
    assert.equal(countdownText(state, T0), 'code WDJB-MJHT: Expires in 10:00')
    assert.equal(countdownText(state, T0 + 999), 'code WDJB-MJHT: Expires in 10:00')
    assert.equal(countdownText(state, T0 + 1000), 'code WDJB-MJHT: Expires in 09:59')
    assert.equal(countdownText(state, T0 + 599_000), 'code WDJB-MJHT: Expires in 00:01')
    assert.equal(countdownText(state, T0 + 600_000), 'code WDJB-MJHT: Expired')
    assert.equal(countdownText(null, T0), null)
    assert.equal(countdownText({ kind: 'ended', state: 'approved' }, T0), null)
  })

  test('issue 11: on a terminal the countdown is one live line redrawn in place under the other output', () => {
    const d = drive(true)
    const state = pendingState(600)
    d.show(state)
    const printed = d.writes.join('')
    assert.match(printed, /^display \| companion display shows:\ndisplay \| \+-{16}\+\n/)
    assert.ok(
      printed.endsWith(`${ERASE}display | code WDJB-MJHT: Expires in 10:00`),
      `the live line last: ${JSON.stringify(printed.slice(-80))}`,
    )
    d.writes.length = 0
    for (let s = 1; s <= 3; s++) {
      d.at(s * 1000)
      d.show(state)
    }
    assert.deepEqual(d.writes, [
      `${ERASE}display | code WDJB-MJHT: Expires in 09:59`,
      `${ERASE}display | code WDJB-MJHT: Expires in 09:58`,
      `${ERASE}display | code WDJB-MJHT: Expires in 09:57`,
    ])
    d.writes.length = 0
    d.out.line('agent   | Signed in as device-user.')
    assert.deepEqual(d.writes, [
      `${ERASE}agent   | Signed in as device-user.\ndisplay | code WDJB-MJHT: Expires in 09:57`,
    ])
    d.writes.length = 0
    d.show({ kind: 'ended', state: 'approved' })
    assert.equal(d.writes[0], ERASE, 'the live line is erased before the next screen')
    assert.match(d.writes.slice(1).join(''), /Signed in/)
    assert.doesNotMatch(d.writes.slice(1).join(''), /Expires/)
    d.writes.length = 0
    d.out.line('after')
    d.out.close()
    assert.deepEqual(d.writes, ['after\n'])
  })

  test('issue 11: on a pipe the countdown is one line every 30 s and once when the code expires', () => {
    const d = drive(false)
    const state = pendingState(100)
    d.show(state)
    const frameLines = d.writes.length
    assert.equal(frameLines, 11, 'the header and the 10 rows of the frame')
    for (let s = 1; s <= 110; s++) {
      d.at(s * 1000)
      d.show(state)
    }
    assert.deepEqual(d.writes.slice(frameLines), [
      'display | code WDJB-MJHT: Expires in 01:10\n',
      'display | code WDJB-MJHT: Expires in 00:40\n',
      'display | code WDJB-MJHT: Expires in 00:10\n',
      'display | code WDJB-MJHT: Expired\n',
    ])
    assert.ok(
      d.writes.every((w) => !w.includes('\u001b')),
      'no terminal controls on a pipe',
    )
    d.writes.length = 0
    d.show(null)
    d.out.close()
    assert.deepEqual(d.writes, ['display | companion display is blank\n'])
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
      assert.ok(m.payload.length <= 16 * 1024, `payload of ${m.payload.length} bytes`)
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
