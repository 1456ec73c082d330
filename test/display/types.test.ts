import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  type DisplayFlow,
  fanOut,
  isoSeconds,
  type LoginDisplay,
  toDisplayFlow,
} from '../../src/display/types.js'

const flow: DisplayFlow = { userCode: 'A', verificationUri: 'https://x/device', expiresAt: 0 }

function recording(name: string, failOn?: string): LoginDisplay & { calls: string[] } {
  const calls: string[] = []
  const step = (what: string) => async () => {
    calls.push(what)
    if (what === failOn) throw new Error(`${name} broke\nbadly`)
  }
  return { name, calls, show: step('show'), end: step('end'), close: step('close') }
}

describe('display fan-out', () => {
  test('one failing display warns once and the others continue', async () => {
    const a = recording('console')
    const b = recording('mqtt', 'show')
    const warnings: string[] = []
    const fan = fanOut([a, b], (w) => warnings.push(w))
    await fan.show(flow)
    await fan.end('approved')
    await fan.close()
    await fan.close()
    assert.deepEqual(a.calls, ['show', 'end', 'close'])
    // The failed display gets no end state, but is still closed.
    assert.deepEqual(b.calls, ['show', 'close'])
    assert.deepEqual(warnings, ['mqtt display failed to show the code: mqtt broke badly'])
  })

  test('toDisplayFlow copies only displayable fields', () => {
    const authorization = Object.defineProperty(
      { ...flow, intervalSeconds: 5, verificationUriComplete: 'https://x/device?c=A' },
      'deviceCode',
      { value: 'secret-device-code', enumerable: true },
    )
    const shown = toDisplayFlow(authorization)
    assert.deepEqual(Object.keys(shown).sort(), [
      'expiresAt',
      'userCode',
      'verificationUri',
      'verificationUriComplete',
    ])
    assert.doesNotMatch(JSON.stringify(shown), /secret/)
    assert.ok(Object.isFrozen(shown))
  })

  test('isoSeconds drops milliseconds', () => {
    assert.equal(isoSeconds(Date.parse('2026-11-25T10:00:00.789Z')), '2026-11-25T10:00:00Z')
  })
})
