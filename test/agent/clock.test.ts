import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, mock, test } from 'node:test'
import { BUILD_TIME, BUILD_TIME_MS, checkClock, waitForSaneClock } from '../../src/agent/clock.js'
import { isEdgeTokenError } from '../../src/errors.js'

const SANE = Date.parse('2027-03-01T12:00:00Z')
const EPOCH = 0 // a Pi without RTC or fake-hwclock
const SYSTEMD_EPOCH = Date.parse('2023-02-01T00:00:00Z') // systemd 252 sets the clock to its build date

/** Resolves pending promise callbacks between fake-timer ticks. */
const flush = () => new Promise((r) => setImmediate(r))

describe('checkClock', () => {
  test('BUILD_TIME is the date this was written', () => {
    assert.equal(BUILD_TIME, '2026-11-25T00:00:00Z')
    assert.equal(BUILD_TIME_MS, Date.UTC(2026, 10, 25))
  })

  test('a clock before the build is wrong; at or after it, ok', () => {
    assert.equal(checkClock(EPOCH), 'before-build')
    assert.equal(checkClock(SYSTEMD_EPOCH), 'before-build')
    assert.equal(checkClock(BUILD_TIME_MS - 1), 'before-build')
    assert.equal(checkClock(BUILD_TIME_MS), 'ok')
    assert.equal(checkClock(new Date(SANE)), 'ok')
  })

  test('an invalid reading is never ok', () => {
    assert.equal(checkClock(Number.NaN), 'before-build')
    assert.equal(checkClock(new Date('garbage')), 'before-build')
    assert.equal(checkClock(Number.POSITIVE_INFINITY), 'before-build')
  })

  test('the bound is injectable', () => {
    assert.equal(checkClock(1000, 500), 'ok')
    assert.equal(checkClock(400, 500), 'before-build')
  })

  test('defaults to the real clock, which is after the build here', () => {
    assert.equal(checkClock(), 'ok')
  })
})

describe('waitForSaneClock', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout'] }))
  afterEach(() => mock.timers.reset())

  test('resolves false at once, without a warning, when the clock is sane', async () => {
    const warnings: string[] = []
    assert.equal(await waitForSaneClock({ now: () => SANE, onWarning: (m) => warnings.push(m) }), false)
    assert.deepEqual(warnings, [])
  })

  test('waits, warning once, until time synchronisation moves the clock past the build', async () => {
    let clock = EPOCH
    let reads = 0
    const warnings: string[] = []
    let done: boolean | undefined
    const waiting = waitForSaneClock({
      pollMs: 1000,
      now: () => {
        reads++
        return clock
      },
      onWarning: (m) => warnings.push(m),
    }).then((v) => {
      done = v
    })
    assert.equal(warnings.length, 1)
    assert.match(
      warnings[0] ?? '',
      /^system clock reads 1970-01-01T00:00:00Z, before this build \(2026-11-25T00:00:00Z\)/,
    )
    for (let i = 0; i < 5; i++) {
      mock.timers.tick(1000)
      await flush()
    }
    assert.equal(done, undefined, 'resolved while the clock was still wrong')
    assert.equal(reads, 6, 'one read up front and one per poll')
    clock = SYSTEMD_EPOCH // stepped, but still before the build
    mock.timers.tick(1000)
    await flush()
    assert.equal(done, undefined)
    clock = SANE
    mock.timers.tick(999)
    await flush()
    assert.equal(done, undefined, 'polled before pollMs had passed')
    mock.timers.tick(1)
    await waiting
    assert.equal(done, true)
    assert.equal(warnings.length, 1, 'warned more than once')
  })

  test('the abort signal stops the wait with ERR_CANCELLED and no further polls', async () => {
    const controller = new AbortController()
    let reads = 0
    const waiting = waitForSaneClock({
      signal: controller.signal,
      pollMs: 1000,
      now: () => {
        reads++
        return EPOCH
      },
    })
    mock.timers.tick(1000)
    await flush()
    controller.abort(new Error('SIGTERM'))
    await assert.rejects(waiting, (err) => isEdgeTokenError(err, 'ERR_CANCELLED'))
    const before = reads
    mock.timers.tick(10_000)
    await flush()
    assert.equal(reads, before, 'kept polling after abort')
  })

  test('an already aborted signal rejects without reading the clock', async () => {
    let reads = 0
    await assert.rejects(
      waitForSaneClock({
        signal: AbortSignal.abort(),
        now: () => {
          reads++
          return SANE
        },
      }),
      (err) => isEdgeTokenError(err, 'ERR_CANCELLED'),
    )
    assert.equal(reads, 0)
  })

  test('an invalid reading is reported, not thrown', async () => {
    const warnings: string[] = []
    const controller = new AbortController()
    const waiting = waitForSaneClock({
      signal: controller.signal,
      now: () => Number.NaN,
      onWarning: (m) => warnings.push(m),
    })
    assert.match(warnings[0] ?? '', /reads an invalid time/)
    controller.abort()
    await assert.rejects(waiting, (err) => isEdgeTokenError(err, 'ERR_CANCELLED'))
  })

  test('a poll period that would busy-loop is a programmer error', () => {
    for (const pollMs of [0, -1, 5, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => waitForSaneClock({ pollMs, now: () => EPOCH }), {
        name: 'TypeError',
        code: 'ERR_INVALID_ARG_VALUE',
      })
    }
  })
})
