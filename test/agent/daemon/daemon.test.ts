/**
 * `edgetoken run` as a child process against the real test IdP, the reference API and mosquitto:
 * readings from the sensor simulator reach the API, renewals happen with short-lived tokens, the
 * API going down and up loses nothing, readings published while it is stopped arrive after its
 * restart, a dead sign-in is announced and a pair request recovers it, SIGTERM exits 0 promptly.
 */
import assert from 'node:assert/strict'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { startSensorSimulator } from '../../../firmware-bridge/simulators/sensor.js'
import type { TestApi } from '../../support/api.js'
import { approveDevice } from '../../support/headless-user.js'
import { startCli, useDaemonFixture, waitUntil } from './daemon-harness.js'

function recordsAt(api: TestApi): { sensor: string; seq: number }[] {
  return api.receiver.batches.flatMap((b) => b.records as { sensor: string; seq: number }[])
}

describe('edgetoken run (daemon)', { timeout: 180_000 }, () => {
  const f = useDaemonFixture()
  const { children, setup, login, retainedOn, waitForRetained, sendPair, assertNoSecrets } = f

  test('readings reach the API, tokens are renewed, an API outage and a restart lose nothing, SIGTERM exits 0', async () => {
    const env = await setup('main', 'gw-daemon')
    await login(env)
    const refreshesBefore = f.idp.refreshes

    const daemon = startCli(['run', '--json'], env)
    children.push(daemon.child)
    await daemon.waitForEvent((e) => e.event === 'ready', 'ready')

    const sensor = await startSensorSimulator({
      url: f.broker.url,
      deviceId: 'gw-daemon',
      sensor: 'greenhouse-1',
      intervalMs: 20,
      count: 20,
    })
    await sensor.done
    await sensor.close()
    await waitUntil(() => recordsAt(f.api).length >= 20, '20 records at the API', 30_000, daemon.stderr)

    // A 12 s token is renewed 3-6 s after it was obtained.
    await daemon.waitForEvent((e) => e.event === 'renewed', 'a renewal', 30_000)
    assert.ok(f.idp.refreshes > refreshesBefore, 'the IdP saw a refresh_token grant')
    // Issue 21: at the default level the journal gets no line per batch or per renewal.
    assert.doesNotMatch(daemon.stderr(), /uploaded batch|renewed the access token/)

    const stderrBefore = daemon.stderr().length
    await f.api.setMode('down')
    const second = await startSensorSimulator({
      url: f.broker.url,
      deviceId: 'gw-daemon',
      sensor: 'greenhouse-1',
      intervalMs: 20,
      count: 10,
      startSeq: 20,
    })
    await second.done
    await second.close()
    // The uploader meets the outage (its first failed attempt is logged) and backs off.
    await waitUntil(
      () => /upload of \S+ failed/.test(daemon.stderr().slice(stderrBefore)),
      'the uploader meeting the outage',
      30_000,
      daemon.stderr,
    )
    await f.api.setMode('up')
    await waitUntil(() => recordsAt(f.api).length >= 30, '30 records after the outage', 60_000, daemon.stderr)
    const seqs = recordsAt(f.api).map((r) => r.seq)
    assert.deepEqual(
      seqs,
      Array.from({ length: 30 }, (_, i) => i),
      'every reading once, in order',
    )
    assert.ok(f.api.receiver.batches.every((b) => b.deviceId === 'gw-daemon'))

    const startedStop = Date.now()
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
    assert.ok(Date.now() - startedStop < 12_000, 'stopped within the shutdown bound')
    assert.ok(daemon.events.some((e) => e.event === 'stopped'))
    assertNoSecrets(daemon)

    // Stopped (an update, a reboot): the broker keeps the agent's session and queues the readings
    // published meanwhile (QoS 1); the next run spools and uploads them.
    const whileStopped = await startSensorSimulator({
      url: f.broker.url,
      deviceId: 'gw-daemon',
      sensor: 'greenhouse-1',
      intervalMs: 5,
      count: 5,
      startSeq: 30,
    })
    await whileStopped.done
    await whileStopped.close()
    const restarted = startCli(['run', '--json'], env)
    children.push(restarted.child)
    await waitUntil(
      () => recordsAt(f.api).length >= 35,
      '35 records after the restart',
      30_000,
      restarted.stderr,
    )
    assert.deepEqual(
      recordsAt(f.api).map((r) => r.seq),
      Array.from({ length: 35 }, (_, i) => i),
      'the readings published while stopped arrived, once, in order',
    )
    restarted.child.kill('SIGTERM')
    assert.equal(await restarted.exit, 0, restarted.stderr())
  })

  test('issue 21: --debug and logLevel debug add a line per batch and per renewal', async () => {
    const env = await setup('debug', 'gw-debug')
    await login(env)
    const publish = async (startSeq: number) => {
      const sensor = await startSensorSimulator({
        url: f.broker.url,
        deviceId: 'gw-debug',
        sensor: 'dbg',
        intervalMs: 10,
        count: 3,
        startSeq,
      })
      await sensor.done
      await sensor.close()
    }
    const lines = (cli: { stderr: () => string }, re: RegExp) =>
      cli
        .stderr()
        .split('\n')
        .filter((l) => re.test(l))
    for (const [how, args, extra, startSeq] of [
      ['--debug', ['run', '--json', '--debug'], {}, 0],
      ['logLevel', ['run', '--json'], { EDGETOKEN_LOG_LEVEL: 'debug' }, 3],
    ] as const) {
      const daemon = startCli([...args], { ...env, ...extra })
      children.push(daemon.child)
      await daemon.waitForEvent((e) => e.event === 'ready', `ready (${how})`)
      await publish(startSeq)
      await daemon.waitForEvent((e) => e.event === 'uploaded', `a batch (${how})`)
      await daemon.waitForEvent((e) => e.event === 'renewed', `a renewal (${how})`, 30_000)
      await waitUntil(
        () => lines(daemon, /^edgetoken: renewed the access token; expires /).length > 0,
        `the renewal line (${how})`,
        5000,
        daemon.stderr,
      )
      daemon.child.kill('SIGTERM')
      assert.equal(await daemon.exit, 0, daemon.stderr())
      const uploaded = daemon.events.filter((e) => e.event === 'uploaded').length
      assert.equal(
        lines(daemon, /^edgetoken: uploaded batch \S+ seq \d+ \(\d+ records?\)$/).length,
        uploaded,
        how,
      )
      assert.equal(
        lines(daemon, /^edgetoken: renewed the access token; expires /).length,
        daemon.events.filter((e) => e.event === 'renewed').length,
        `one line per renewed event (${how})`,
      )
      assertNoSecrets(daemon)
    }
  })

  test('`send` and `upload` next to the running daemon: upload exits 0 and every record arrives once', async () => {
    const env = await setup('beside', 'gw-beside')
    await login(env)
    const daemon = startCli(['run', '--json'], env)
    children.push(daemon.child)
    await daemon.waitForEvent((e) => e.event === 'ready', 'ready')
    const mine = () =>
      f.api.receiver.batches
        .filter((b) => b.deviceId === 'gw-beside')
        .flatMap((b) => b.records as { seq: number }[])
    const send = async (from: number) => {
      const records = Array.from({ length: 50 }, (_, i) => JSON.stringify({ seq: from + i }))
      const cli = startCli(['send', '--json'], env, `${records.join('\n')}\n`)
      assert.equal(await cli.exit, 0, cli.stderr())
    }
    // The daemon delivers these itself (its idle check finds them), taking the upload lock...
    await send(0)
    await waitUntil(() => mine().length >= 50, 'the daemon delivering 50 records', 30_000, daemon.stderr)
    // ...and gives it up once the spool is empty: `upload` delivers the next ones and exits 0.
    await send(50)
    const upload = startCli(['upload', '--json'], env)
    assert.equal(await upload.exit, 0, upload.stderr())
    assert.equal(upload.events.find((e) => e.event === 'uploaded')?.pending, 0)
    assert.equal(mine().length, 100)
    assert.deepEqual(
      mine().map((r) => r.seq),
      Array.from({ length: 100 }, (_, i) => i),
      'every record once, in order',
    )
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
  })

  test('not signed in: sign-in required is announced, readings are spooled, a pair request signs in', async () => {
    const env = await setup('pair', 'gw-pair')
    const daemon = startCli(['run', '--json'], env)
    children.push(daemon.child)
    await daemon.waitForEvent((e) => e.event === 'signin_required', 'signin_required')
    assert.match(daemon.stderr(), /sign-in required/)
    await daemon.waitForEvent((e) => e.event === 'ready', 'ready')

    const sensor = await startSensorSimulator({
      url: f.broker.url,
      deviceId: 'gw-pair',
      sensor: 'p',
      intervalMs: 10,
      count: 5,
    })
    await sensor.done
    await sensor.close()

    // The companion display asks for a sign-in; the agent starts a device flow.
    const userCodesBefore = f.idp.issued.userCodes.length
    await sendPair('gw-pair')
    await waitUntil(
      () => f.idp.issued.userCodes.length > userCodesBefore,
      'a device flow',
      30_000,
      daemon.stderr,
    )
    const userCode = f.idp.issued.userCodes.at(-1)
    await approveDevice(f.idp.issuer, String(userCode))
    await daemon.waitForEvent((e) => e.event === 'signed_in', 'signed_in', 30_000)
    // The sign-in showed its code on the daemon's own relay: the daemon is still `online`.
    await waitForRetained('edgetoken/gw-pair/status', (p) => p.length > 0, 'the retained status')
    assert.deepEqual(await retainedOn('edgetoken/gw-pair/status'), ['online'])

    await waitUntil(
      () =>
        f.api.receiver.batches.filter((b) => b.deviceId === 'gw-pair').flatMap((b) => b.records).length >= 5,
      'the spooled readings at the API',
      30_000,
      daemon.stderr,
    )
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
    assertNoSecrets(daemon)
  })

  test('systemd: READY=1, STATUS=, WATCHDOG=1 every half of WATCHDOG_USEC, STOPPING=1 on SIGTERM', async () => {
    const env = await setup('notify', 'gw-notify')
    // A stand-in for systemd-notify(1): appends a ms timestamp and its arguments to the "socket" path.
    const bin = join(f.dir, 'bin')
    await mkdir(bin, { recursive: true })
    await writeFile(
      join(bin, 'systemd-notify'),
      '#!/bin/sh\necho "$(date +%s%3N) $*" >> "$NOTIFY_SOCKET"\n',
      {
        mode: 0o755,
      },
    )
    const notifyLog = join(f.dir, 'notify.log')
    const daemon = startCli(['run', '--json'], {
      ...env,
      NOTIFY_SOCKET: notifyLog,
      WATCHDOG_USEC: '1000000',
      PATH: `${bin}:${process.env.PATH ?? ''}`,
    })
    children.push(daemon.child)
    const logged = async () => readFile(notifyLog, 'utf8').catch(() => '')
    let text = ''
    const deadline = Date.now() + 30_000
    while (!/READY=1/.test(text) || (text.match(/WATCHDOG=1/g) ?? []).length < 5) {
      if (Date.now() > deadline) throw new Error(`no READY/WATCHDOG: ${text}\n${daemon.stderr()}`)
      await new Promise((r) => setTimeout(r, 100))
      text = await logged()
    }
    assert.match(text, /STATUS=sign-in required/)
    // WATCHDOG_USEC=1 s: a ping every 500 ms. The mean over four gaps absorbs each ping's spawn
    // jitter (and one ping coalesced under load, 625 ms); 900 ms still tells it from a ping per
    // WATCHDOG_USEC (1000 ms, systemd would kill the service), 400 ms from one per quarter (250 ms).
    // The exact schedule is checked with mocked timers in notify.test.ts.
    const pings = text
      .split('\n')
      .filter((line) => / WATCHDOG=1$/.test(line))
      .map((line) => Number(line.split(' ')[0]))
    const first = pings[0] as number
    const fifth = pings[4] as number
    const meanGap = (fifth - first) / 4
    assert.ok(meanGap >= 400 && meanGap < 900, `mean WATCHDOG=1 gap ${meanGap} ms, expected about 500`)
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
    const stopDeadline = Date.now() + 10_000
    while (!/STOPPING=1/.test(text)) {
      if (Date.now() > stopDeadline) throw new Error(`no STOPPING=1: ${text}`)
      await new Promise((r) => setTimeout(r, 100))
      text = await logged()
    }
  })

  test('a dead refresh token: announced, readings kept, and a separate login resumes uploads', async () => {
    const env = await setup('dead', 'gw-dead')
    await login(env)
    const daemon = startCli(['run', '--json'], env)
    children.push(daemon.child)
    await daemon.waitForEvent((e) => e.event === 'ready', 'ready')

    // Revoke every refresh token the IdP issued: the next silent renewal gets invalid_grant.
    for (const token of f.idp.issued.refreshTokens) {
      await fetch(new URL('/token/revocation', f.idp.issuer), {
        method: 'POST',
        body: new URLSearchParams({
          client_id: f.idp.publicClientId,
          token,
          token_type_hint: 'refresh_token',
        }),
      })
    }
    const revokedAt = Date.now()
    await daemon.waitForEvent((e) => e.event === 'signin_required', 'signin_required', 30_000)
    assert.match(daemon.stderr(), /warning: sign-in required/)

    // The companion display learns it too: a retained notice on the login topic (issue 6).
    const [notice] = await waitForRetained(
      'edgetoken/gw-dead/login',
      (p) => p.length === 1,
      'the retained signin_required notice',
    )
    const body = JSON.parse(notice ?? '{}') as Record<string, unknown>
    assert.deepEqual(Object.keys(body).sort(), ['pair', 'since', 'state'])
    assert.equal(body.state, 'signin_required')
    assert.equal(body.pair, true, 'mqtt.allowPair is true and the daemon can sign in')
    assert.match(String(body.since), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
    const since = Date.parse(String(body.since))
    assert.ok(since >= revokedAt - 1000 && since <= Date.now(), `since ${body.since} is when it was noticed`)
    for (const secret of [
      ...f.idp.issued.refreshTokens,
      ...f.idp.issued.accessTokens,
      ...f.idp.issued.deviceCodes,
    ]) {
      assert.ok(!notice?.includes(secret), 'no token or device code on the login topic')
    }

    const sensor = await startSensorSimulator({
      url: f.broker.url,
      deviceId: 'gw-dead',
      sensor: 'd',
      intervalMs: 10,
      count: 5,
    })
    await sensor.done
    await sensor.close()
    await login(env)
    await daemon.waitForEvent((e) => e.event === 'signed_in', 'signed_in after a separate login', 30_000)
    await waitForRetained(
      'edgetoken/gw-dead/login',
      (p) => p.length === 0,
      'the notice cleared after the login',
    )
    await waitUntil(
      () =>
        f.api.receiver.batches.filter((b) => b.deviceId === 'gw-dead').flatMap((b) => b.records).length >= 5,
      'the readings spooled while signed out',
      30_000,
      daemon.stderr,
    )
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
    assertNoSecrets(daemon)
  })
})
