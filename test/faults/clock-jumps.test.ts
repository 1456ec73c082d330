/**
 * Issue 16: the wall clock jumping (NTP stepping a Raspberry Pi's clock after boot, an operator
 * fixing it by hand) while the daemon waits to renew and while a device flow polls. Timers run on
 * the monotonic clock and `Date.now()` on the wall clock, so the tests move the two separately:
 * the renewer gets mocked `setTimeout` and a wall clock of its own; the poller runs on real timers
 * against a loopback fault server while `Date` alone is mocked and stepped.
 *
 * What must hold: no busy loop, no early give-up, no renewal an hour late, renewal happens.
 */
import assert from 'node:assert/strict'
import { after, afterEach, describe, mock, test } from 'node:test'
import { createRenewer, type RenewalResult } from '../../src/agent/renewer.js'
import { isEdgeTokenError } from '../../src/errors.js'
import { resolveAuthority } from '../../src/oauth/authority.js'
import { pollDeviceAuthorization, startDeviceAuthorization } from '../../src/oauth/grants/device.js'
import { type FaultRequest, startFaultServer } from '../support/fault-server.js'

// MockTimers prints an ExperimentalWarning on Node 20; keep it out of the test output.
const emitWarning = process.emitWarning
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  if (String(warning).includes('MockTimers')) return
  ;(emitWarning as (...a: unknown[]) => void).call(process, warning, ...rest)
}) as typeof process.emitWarning

const HOUR = 3600_000
const MINUTE = 60_000
const T0 = 1_800_000_000_000

/** Lets promise callbacks run (setImmediate is not mocked). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve))

describe('issue 16: clock jumps during renewal', () => {
  afterEach(() => mock.timers.reset())

  /** A renewer on mocked (monotonic) timers with a wall clock the test steps by itself. */
  function renewerWithWallClock() {
    mock.timers.enable({ apis: ['setTimeout'] })
    const wall = { now: T0 }
    const calls: { force: boolean; wall: number }[] = []
    let timers = 0
    const renewer = createRenewer({
      renew: async (force): Promise<RenewalResult> => {
        calls.push({ force, wall: wall.now })
        // A token response: expiry from the wall clock at receipt plus expires_in (one hour).
        return { expiresAt: wall.now + HOUR, fromCache: !force }
      },
      now: () => wall.now,
      random: () => 0,
      timers: {
        setTimeout: (callback, ms) => {
          timers += 1
          return setTimeout(callback, ms)
        },
        clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
      },
    })
    /** Advances both clocks together (time passing), `ms` in one-minute steps. */
    const pass = async (ms: number) => {
      for (let left = ms; left > 0; left -= MINUTE) {
        const step = Math.min(MINUTE, left)
        wall.now += step
        mock.timers.tick(step)
        await settle()
      }
    }
    return { renewer, wall, calls, pass, timers: () => timers }
  }

  test('forward past expiry while waiting: one renewal at the scheduled moment, then a normal schedule; no busy loop', async () => {
    const { renewer, wall, calls, pass, timers } = renewerWithWallClock()
    renewer.start()
    await settle()
    assert.equal(calls.length, 1)
    assert.equal(renewer.nextAt, T0 + HOUR - 5 * MINUTE)

    await pass(10 * MINUTE)
    wall.now += 2 * HOUR // NTP steps the clock: the token now looks an hour past its expiry
    await pass(45 * MINUTE - 1)
    assert.equal(calls.length, 1, 'the monotonic wait is not cut short')
    await pass(1)
    assert.equal(calls.length, 2, 'renewed when due')
    assert.equal(calls[1]?.force, true)
    assert.equal(renewer.state, 'scheduled')
    assert.equal(
      renewer.nextAt,
      wall.now + HOUR - 5 * MINUTE,
      'scheduled from the new token, in the new time',
    )
    await pass(30 * MINUTE)
    assert.equal(calls.length, 2, 'no further renewals')
    assert.ok(timers() <= 3, `timers created: ${timers()}`)
    renewer.stop()
  })

  test('back by an hour while waiting: the renewal is not an hour late', async () => {
    const { renewer, wall, calls, pass } = renewerWithWallClock()
    renewer.start()
    await settle()
    await pass(20 * MINUTE)
    wall.now -= HOUR // the token now looks valid for another 1 h 40 min
    await pass(35 * MINUTE - 1)
    assert.equal(calls.length, 1)
    await pass(1)
    assert.equal(calls.length, 2, 'renewed 55 minutes after the token arrived, as scheduled')
    assert.equal(renewer.nextAt, wall.now + HOUR - 5 * MINUTE)
    renewer.stop()
  })

  test('forward while a refresh is in flight: at most one extra renewal a second later, then normal', async () => {
    mock.timers.enable({ apis: ['setTimeout'] })
    const wall = { now: T0 }
    const calls: number[] = []
    const renewer = createRenewer({
      renew: async () => {
        const requestedAt = wall.now
        calls.push(requestedAt)
        // The clock steps between the request and the response, the first time only.
        if (calls.length === 2) wall.now += 2 * HOUR
        return { expiresAt: requestedAt + HOUR }
      },
      now: () => wall.now,
      random: () => 0,
    })
    renewer.start()
    await settle()
    wall.now += 55 * MINUTE
    mock.timers.tick(55 * MINUTE)
    await settle()
    assert.equal(calls.length, 2)
    // The token it got looks expired already: renew soon, but not in a loop.
    assert.equal(renewer.nextAt, wall.now + 1000)
    wall.now += 1000
    mock.timers.tick(1000)
    await settle()
    assert.equal(calls.length, 3)
    assert.equal(renewer.nextAt, wall.now + HOUR - 5 * MINUTE)
    for (let i = 0; i < 30; i++) {
      wall.now += MINUTE
      mock.timers.tick(MINUTE)
      await settle()
    }
    assert.equal(calls.length, 3)
    renewer.stop()
  })
})

describe('issue 16: clock jumps during device polling (RFC 8628 §3.5)', () => {
  const started: { close(): Promise<void> }[] = []
  after(async () => {
    for (const s of started) await s.close()
  })
  afterEach(() => mock.timers.reset())

  /**
   * A fault server playing the IdP for one device flow whose code lives `lifetimeMs` of real
   * (monotonic) time, as the IdP's own clock counts it; approved after `approveAfterPolls` polls.
   */
  async function deviceIdp(options: {
    expiresInSeconds: number
    approveAfterPolls?: number
    /** The IdP's own clock says the code is dead (it kept counting while this machine slept). */
    expiredAtIdp?: () => boolean
  }) {
    let startedAt = 0
    const polls: number[] = []
    const idp = await startFaultServer({
      route: (r: FaultRequest) => {
        if (r.method === 'POST' && r.path === '/device/auth') {
          startedAt = performance.now()
          return {
            status: 200,
            json: {
              device_code: 'dc-clock',
              user_code: 'WDJB-MJHT',
              verification_uri: `${idp.issuer}/device`,
              expires_in: options.expiresInSeconds,
              interval: 1,
            },
          }
        }
        if (r.method === 'POST' && r.path === '/token') {
          polls.push(performance.now())
          if (performance.now() - startedAt >= options.expiresInSeconds * 1000 || options.expiredAtIdp?.())
            return { status: 400, json: { error: 'expired_token' } }
          if (options.approveAfterPolls !== undefined && polls.length >= options.approveAfterPolls)
            return {
              status: 200,
              json: {
                access_token: 'at-clock',
                token_type: 'Bearer',
                expires_in: 3600,
                scope: 'telemetry:write',
              },
            }
          return { status: 400, json: { error: 'authorization_pending' } }
        }
        return undefined
      },
    })
    started.push(idp)
    const server = await resolveAuthority(idp.issuer)
    const flow = await startDeviceAuthorization(server, { clientId: 'edgetoken-device' }, ['telemetry:write'])
    return { server, flow, polls }
  }

  test('forward by an hour between polls: polling goes on and the sign-in completes (the code lives on at the IdP)', async () => {
    const { server, flow, polls } = await deviceIdp({ expiresInSeconds: 600, approveAfterPolls: 3 })
    mock.timers.enable({ apis: ['Date'], now: Date.now() })
    const tokens = await pollDeviceAuthorization(server, { clientId: 'edgetoken-device' }, flow, {
      onPoll: (event) => {
        if (event.outcome === 'pending' && polls.length === 1) mock.timers.setTime(Date.now() + HOUR)
      },
    })
    assert.equal(tokens.accessToken, 'at-clock')
    assert.equal(polls.length, 3)
    // The token's expiry is reckoned in the (new) wall clock, from expires_in.
    assert.ok(Math.abs(tokens.expiresAt - (Date.now() + HOUR)) < 5000)
  })

  test("back by an hour between polls: one poll per interval, ended at the code's real expiry", async () => {
    const { server, flow, polls } = await deviceIdp({ expiresInSeconds: 4 })
    mock.timers.enable({ apis: ['Date'], now: Date.now() })
    const t0 = performance.now()
    await assert.rejects(
      pollDeviceAuthorization(server, { clientId: 'edgetoken-device' }, flow, {
        onPoll: (event) => {
          if (event.outcome === 'pending' && polls.length === 1) mock.timers.setTime(Date.now() - HOUR)
        },
      }),
      (err: unknown) => isEdgeTokenError(err, 'ERR_EXPIRED'),
    )
    const took = performance.now() - t0
    assert.ok(took < 9000, `ended ${Math.round(took)} ms after the start, near the code's real expiry`)
    assert.ok(polls.length >= 2 && polls.length <= 6, `${polls.length} polls`)
    for (let i = 1; i < polls.length; i++) {
      const gap = (polls[i] ?? 0) - (polls[i - 1] ?? 0)
      assert.ok(gap >= 900, `poll ${i} came ${Math.round(gap)} ms after the previous one`)
    }
  })

  test("a suspend past the expiry (the monotonic clock stood still): one more poll, then ERR_EXPIRED from the IdP's expired_token", async () => {
    // CLOCK_MONOTONIC does not count a suspend, so to the poller it looks like a forward wall-clock
    // step; the IdP's clock kept running and it answers expired_token (RFC 8628 §3.5).
    let resumed = false
    const { server, flow, polls } = await deviceIdp({ expiresInSeconds: 600, expiredAtIdp: () => resumed })
    mock.timers.enable({ apis: ['Date'], now: Date.now() })
    const outcomes: string[] = []
    await assert.rejects(
      pollDeviceAuthorization(server, { clientId: 'edgetoken-device' }, flow, {
        onPoll: (event) => {
          outcomes.push(event.outcome)
          if (polls.length === 1) {
            mock.timers.setTime(Date.now() + HOUR)
            resumed = true
          }
        },
      }),
      (err: unknown) => isEdgeTokenError(err, 'ERR_EXPIRED'),
    )
    assert.equal(polls.length, 2, 'one poll after the resume, none after expired_token')
    assert.deepEqual(outcomes, ['pending'])
  })
})
