import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, mock, test } from 'node:test'
import { createRenewer, type RenewalResult, type RenewerTimers, renewalAt } from '../../src/agent/renewer.js'
import { EdgeTokenError, UnavailableError } from '../../src/errors.js'

// MockTimers prints an ExperimentalWarning on Node 20; keep it out of the test output.
const emitWarning = process.emitWarning
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  if (String(warning).includes('MockTimers')) return
  ;(emitWarning as (...a: unknown[]) => void).call(process, warning, ...rest)
}) as typeof process.emitWarning

const HOUR = 3600_000
const T0 = 1_800_000_000_000

/** Lets promise callbacks run (setImmediate is not mocked). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve))

/** The global (mocked) timers, counting how many are created. */
function countingTimers(): RenewerTimers & { created: number } {
  const timers = {
    created: 0,
    setTimeout(callback: () => void, ms: number) {
      timers.created += 1
      return setTimeout(callback, ms)
    },
    clearTimeout(handle: unknown) {
      clearTimeout(handle as ReturnType<typeof setTimeout>)
    },
  }
  return timers
}

describe('renewalAt', () => {
  const timing = { marginMs: 300_000, jitterMs: 120_000, minDelayMs: 1000 }

  test('a one-hour token renews 5 to 7 minutes before expiry', () => {
    const exp = T0 + HOUR
    assert.equal(renewalAt(exp, T0, { ...timing, random: 0 }), exp - 300_000)
    assert.equal(
      renewalAt(exp, T0, { ...timing, random: 0.999999 }),
      Math.round(exp - 300_000 - 0.999999 * 120_000),
    )
  })

  test('short-lived tokens renew after a quarter to half their lifetime, not at once', () => {
    const exp = T0 + 30_000
    const early = renewalAt(exp, T0, { ...timing, random: 0.999 })
    const late = renewalAt(exp, T0, { ...timing, random: 0 })
    assert.equal(late, T0 + 15_000) // margin = lifetime / 2, as the token cache's
    assert.ok(early >= T0 + 7_500 && early < late, String(early - T0)) // jitter <= lifetime / 4
  })

  test('never sooner than minDelayMs, even for a token already expired', () => {
    assert.equal(renewalAt(T0 - 5000, T0, { ...timing, random: 0.5 }), T0 + 1000)
    assert.equal(renewalAt(T0 + 100, T0, { ...timing, random: 0.5 }), T0 + 1000)
  })

  test('different random draws spread a fleet over the jitter window', () => {
    const exp = T0 + HOUR
    const times = new Set([0, 0.25, 0.5, 0.75].map((r) => renewalAt(exp, T0, { ...timing, random: r })))
    assert.equal(times.size, 4)
  })
})

describe('createRenewer', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 }))
  afterEach(() => mock.timers.reset())

  test('reads the cached token first, then renews (forced) ahead of expiry and again after that', async () => {
    const calls: { force: boolean; at: number }[] = []
    const renewed: number[] = []
    const renewer = createRenewer({
      renew: async (force) => {
        calls.push({ force, at: Date.now() })
        return { expiresAt: Date.now() + HOUR, fromCache: !force }
      },
      random: () => 0,
      onRenewed: (_r, nextAt) => renewed.push(nextAt),
    })
    renewer.start()
    await settle()
    assert.deepEqual(calls, [{ force: false, at: T0 }])
    assert.equal(renewer.state, 'scheduled')
    assert.equal(renewer.nextAt, T0 + HOUR - 300_000)

    mock.timers.tick(HOUR - 300_001)
    await settle()
    assert.equal(calls.length, 1, 'no renewal before the scheduled time')

    mock.timers.tick(1)
    await settle()
    assert.deepEqual(calls[1], { force: true, at: T0 + HOUR - 300_000 })
    mock.timers.tick(HOUR - 300_000)
    await settle()
    assert.equal(calls.length, 3)
    assert.equal(renewer.renewals, 3)
    assert.equal(renewed.length, 3)
    renewer.stop()
  })

  test('one timer between renewals: no wake-ups while idle', async () => {
    const timers = countingTimers()
    let renews = 0
    const renewer = createRenewer({
      renew: async () => {
        renews += 1
        return { expiresAt: Date.now() + HOUR }
      },
      timers,
      random: () => 0.5,
    })
    renewer.start()
    await settle()
    // The renewal after a start is drawn over a whole period: with 0.5, 28 minutes ahead.
    assert.equal(renewer.nextAt, T0 + 28 * 60_000)
    for (let i = 0; i < 27; i++) {
      mock.timers.tick(60_000) // 27 minutes in 1-minute steps
      await settle()
    }
    assert.equal(renews, 1)
    assert.equal(timers.created, 1)
    renewer.stop()
  })

  test('failures back off exponentially and honour Retry-After, never earlier (RFC 9110 §10.2.3); a success resets the back-off to its first step', async () => {
    const outcomes: (Error | RenewalResult)[] = [
      new UnavailableError('idp down'),
      new UnavailableError('idp down'),
      new UnavailableError('idp busy', { status: 503, retryAfterSeconds: 120 }),
      { expiresAt: T0 + 10 * HOUR },
      new UnavailableError('idp down again'),
      new UnavailableError('idp down again'),
    ]
    const retries: number[] = []
    const renewedAt: number[] = []
    const renewer = createRenewer({
      renew: async () => {
        const next = outcomes.shift()
        if (!next) throw new Error('unexpected renewal')
        if (next instanceof Error) throw next
        return next
      },
      random: () => 0,
      // Back-off delays at the top of their range: the step, base * 2^n; Retry-After plus the
      // whole spread (the cap).
      backoff: { baseMs: 2000, capMs: 60_000, random: () => 1 - 2 ** -40 },
      onRetry: (_e, ms) => retries.push(ms),
      onRenewed: (_r, at) => renewedAt.push(at),
    })
    renewer.start()
    await settle()
    assert.deepEqual(retries, [2000])
    mock.timers.tick(2000)
    await settle()
    assert.deepEqual(retries, [2000, 4000])
    mock.timers.tick(4000)
    await settle()
    assert.deepEqual(retries, [2000, 4000, 180_000], 'Retry-After (120 s) plus its spread')
    mock.timers.tick(179_999)
    await settle()
    assert.equal(outcomes.length, 3, 'the success is not taken early')
    mock.timers.tick(1)
    await settle()
    assert.equal(outcomes.length, 2)
    assert.equal(renewer.state, 'scheduled')
    assert.equal(renewer.renewals, 1)
    assert.deepEqual(retries, [2000, 4000, 180_000], 'no retry after the success')

    // The next scheduled renewal fails: the back-off starts again from its first step (2 s, then
    // 4 s), not from where the earlier run of failures left it.
    const nextAt = renewedAt[0] as number
    mock.timers.tick(nextAt - Date.now())
    await settle()
    assert.equal(outcomes.length, 1)
    assert.deepEqual(retries, [2000, 4000, 180_000, 2000])
    mock.timers.tick(2000)
    await settle()
    assert.equal(outcomes.length, 0)
    assert.deepEqual(retries, [2000, 4000, 180_000, 2000, 4000])
    renewer.stop()
  })

  test('sign-in required stops renewal until start() is called again', async () => {
    let dead = true
    let calls = 0
    let reported = 0
    const renewer = createRenewer({
      renew: async () => {
        calls += 1
        if (dead) throw new EdgeTokenError('ERR_SIGNIN_REQUIRED', 'sign-in required')
        return { expiresAt: Date.now() + HOUR }
      },
      onSigninRequired: () => {
        reported += 1
      },
    })
    renewer.start()
    await settle()
    assert.equal(renewer.state, 'signin-required')
    assert.equal(reported, 1)
    mock.timers.tick(24 * HOUR)
    await settle()
    assert.equal(calls, 1, 'no retries after sign-in required')

    dead = false
    renewer.start()
    await settle()
    assert.equal(calls, 2)
    assert.equal(renewer.state, 'scheduled')
    renewer.stop()
  })

  test('stop() cancels the timer and ignores a renewal that finishes afterwards', async () => {
    let release: ((r: RenewalResult) => void) | undefined
    let aborted = false
    let calls = 0
    const renewer = createRenewer({
      renew: (_force, signal) => {
        calls += 1
        signal.addEventListener('abort', () => {
          aborted = true
        })
        return new Promise((resolve) => {
          release = resolve
        })
      },
    })
    renewer.start()
    await settle()
    assert.equal(renewer.state, 'renewing')
    renewer.stop()
    assert.ok(aborted)
    release?.({ expiresAt: Date.now() + HOUR })
    await settle()
    assert.equal(renewer.state, 'stopped')
    assert.equal(renewer.nextAt, undefined)
    mock.timers.tick(48 * HOUR)
    await settle()
    assert.equal(calls, 1)
  })

  test('renewNow() forces a renewal before the schedule', async () => {
    const forces: boolean[] = []
    const renewer = createRenewer({
      renew: async (force) => {
        forces.push(force)
        return { expiresAt: Date.now() + HOUR }
      },
    })
    renewer.start()
    await settle()
    renewer.renewNow()
    await settle()
    assert.deepEqual(forces, [false, true])
    assert.equal(renewer.state, 'scheduled')
    renewer.stop()
  })

  test('issue 21: a token refreshed elsewhere (the uploader after a 401) moves the next renewal, a pending retry too', async () => {
    const calls: number[] = []
    let fail = false
    const renewer = createRenewer({
      renew: async () => {
        calls.push(Date.now())
        if (fail) throw new UnavailableError('IdP down')
        return { expiresAt: Date.now() + HOUR }
      },
      random: () => 0,
    })
    renewer.start()
    await settle()
    assert.equal(renewer.nextAt, T0 + HOUR - 300_000)
    // Twenty minutes later the uploader refreshed: the renewal follows the new token's expiry.
    mock.timers.tick(20 * 60_000)
    const refreshedAt = Date.now()
    assert.equal(renewer.renewedElsewhere(refreshedAt + HOUR), refreshedAt + HOUR - 300_000)
    mock.timers.tick(HOUR - 300_000 - 20 * 60_000)
    await settle()
    assert.equal(calls.length, 1, 'the old schedule is gone')
    mock.timers.tick(20 * 60_000)
    await settle()
    assert.equal(calls.length, 2, 'renewed on the new schedule')

    // A failed renewal waits for its retry; a refresh elsewhere makes the retry moot.
    fail = true
    mock.timers.tick(HOUR - 300_000)
    await settle()
    assert.equal(calls.length, 3)
    assert.ok(renewer.nextAt !== undefined && renewer.nextAt - Date.now() <= 4000, 'a retry is pending')
    fail = false
    const at = renewer.renewedElsewhere(Date.now() + HOUR)
    assert.equal(at, Date.now() + HOUR - 300_000)
    mock.timers.tick(10_000)
    await settle()
    assert.equal(calls.length, 3, 'no retry once the token is fresh')
    renewer.stop()
    assert.equal(renewer.renewedElsewhere(Date.now() + HOUR), undefined, 'stopped: nothing scheduled')
  })
})

/** A seeded random source in [0, 1) (Park-Miller): fleets of renewers, reproducibly. */
function seeded(seed: number): () => number {
  let s = seed
  return () => {
    s = (s * 16807) % 2147483647
    return (s - 1) / 2147483646
  }
}

/** Peak over mean of the counts of `times` per `bucketMs`, over [from, to). */
function peakOverMean(times: number[], from: number, to: number, bucketMs: number): number {
  const counts = new Array<number>(Math.ceil((to - from) / bucketMs)).fill(0)
  for (const t of times) {
    const k = Math.floor((t - from) / bucketMs)
    if (t >= from && t < to) counts[k] = (counts[k] ?? 0) + 1
  }
  const mean = counts.reduce((a, b) => a + b, 0) / counts.length
  return Math.max(...counts) / mean
}

describe('issue 17: a fleet does not renew or retry in lock-step', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 }))
  afterEach(() => mock.timers.reset())

  test('renewalAt with spread draws over one whole renewal period, never later than the margin', () => {
    const timing = { marginMs: 300_000, jitterMs: 120_000, minDelayMs: 1000, spread: true }
    const exp = T0 + HOUR
    assert.equal(renewalAt(exp, T0, { ...timing, random: 0 }), exp - 300_000)
    // The period: lifetime - margin - jitter / 2 = 54 min, so 1 to 55 minutes after T0.
    assert.equal(renewalAt(exp, T0, { ...timing, random: 1 - 2 ** -40 }), T0 + 60_000)
    // A 60 s token: 7.5 to 30 s (the cache's margin is half the lifetime).
    assert.equal(renewalAt(T0 + 60_000, T0, { ...timing, random: 1 - 2 ** -40 }), T0 + 7500)
    assert.equal(renewalAt(T0 + 60_000, T0, { ...timing, random: 0 }), T0 + 30_000)
  })

  test('1000 renewers started in the same second with one-hour tokens renew at a flat rate from the first period on', async () => {
    const random = seeded(17)
    const renewedAt: number[] = []
    const fleet = Array.from({ length: 1000 }, () =>
      createRenewer({
        renew: async (force) => {
          if (force) renewedAt.push(Date.now())
          return { expiresAt: Date.now() + HOUR }
        },
        random,
      }),
    )
    for (const r of fleet) r.start()
    await settle()
    for (let minute = 0; minute < 4 * 60; minute++) {
      mock.timers.tick(60_000)
      await settle()
    }
    for (const r of fleet) r.stop()
    // Without the spread, the whole fleet renews within the same two minutes every 54 minutes.
    const ratio = peakOverMean(renewedAt, T0, T0 + 4 * HOUR, 5 * 60_000)
    assert.ok(ratio <= 1.6, `peak/mean per 5 minutes ${ratio.toFixed(2)}`)
    assert.ok(renewedAt.length > 4000, String(renewedAt.length))
  })

  test('the renewal after a run of failures (an outage a fleet went through together) is spread over a whole period', async () => {
    let fail = true
    const renewer = createRenewer({
      renew: async () => {
        if (fail) throw new UnavailableError('IdP down')
        return { expiresAt: Date.now() + HOUR }
      },
      random: () => 0.75,
      backoff: { random: () => 0 },
    })
    renewer.start()
    await settle()
    fail = false
    const retryAt = renewer.nextAt as number
    mock.timers.tick(retryAt - Date.now())
    await settle()
    assert.equal(renewer.state, 'scheduled')
    // 0.75 of the 54-minute period before the margin, not 0.75 of the 2-minute jitter.
    assert.equal(renewer.nextAt, retryAt + HOUR - 300_000 - 0.75 * 3240_000)

    // The same after a pending retry ended by a refresh elsewhere (the uploader's).
    fail = true
    mock.timers.tick((renewer.nextAt as number) - Date.now())
    await settle()
    const at = renewer.renewedElsewhere(Date.now() + HOUR)
    assert.equal(at, Date.now() + HOUR - 300_000 - 0.75 * 3240_000)
    // A refresh elsewhere without failures keeps the narrow window.
    assert.equal(renewer.renewedElsewhere(Date.now() + HOUR), Date.now() + HOUR - 300_000 - 0.75 * 120_000)
    renewer.stop()
  })

  test('a fleet told Retry-After: 10 comes back over 10-15 s, never earlier (RFC 9110 §10.2.3)', async () => {
    const random = seeded(3)
    const delays: number[] = []
    const fleet = Array.from({ length: 200 }, () =>
      createRenewer({
        renew: async () => {
          throw new UnavailableError('IdP busy', { status: 503, retryAfterSeconds: 10 })
        },
        random,
        onRetry: (_e, ms) => delays.push(ms),
      }),
    )
    for (const r of fleet) r.start()
    await settle()
    for (const r of fleet) r.stop()
    assert.equal(delays.length, 200)
    assert.ok(Math.min(...delays) >= 10_000, String(Math.min(...delays)))
    assert.ok(Math.max(...delays) <= 15_000, String(Math.max(...delays)))
    // Spread over the 5 s: no second of it holds more than twice its share.
    const ratio = peakOverMean(delays, 10_000, 15_000, 1000)
    assert.ok(ratio <= 1.5, `peak/mean per second ${ratio.toFixed(2)}`)
  })

  test('the back-off grows with the time spent failing, Retry-After waits included', async () => {
    const outcomes: (Error | RenewalResult)[] = [
      new UnavailableError('IdP busy', { status: 503, retryAfterSeconds: 10 }),
      new UnavailableError('IdP busy', { status: 503, retryAfterSeconds: 10 }),
      new UnavailableError('IdP down', { status: 503 }),
    ]
    const retries: number[] = []
    const renewer = createRenewer({
      renew: async () => {
        const next = outcomes.shift()
        if (next instanceof Error) throw next
        return next ?? { expiresAt: Date.now() + HOUR }
      },
      backoff: { baseMs: 2000, capMs: 300_000, random: () => 1 - 2 ** -40 },
      onRetry: (_e, ms) => retries.push(ms),
    })
    renewer.start()
    await settle()
    mock.timers.tick(retries[0] as number)
    await settle()
    mock.timers.tick(retries[1] as number)
    await settle()
    // 10 s + 5 s; failing for 15 s: 10 s + 15 s; failing for 40 s, no Retry-After: up to 40 s,
    // not the third step's 8 s (a fleet would be back at short steps when the outage ends).
    assert.deepEqual(retries, [15_000, 25_000, 40_000])
    renewer.stop()
  })
})
