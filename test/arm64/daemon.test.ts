/**
 * The gateway's daemon, started through the test helpers (test/support/cli.ts) so that
 * test/arm64.sh runs it, and the `login` before it, with the built CLI on an emulated arm64 Node;
 * natively they run with the rest of the suite. The servers and the device's config come from the
 * daemon tests' harness (the real test IdP with 12 s tokens, the reference API, mosquitto).
 */
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { startSensorSimulator } from '../../firmware-bridge/simulators/sensor.js'
import { useDaemonFixture, waitUntil } from '../agent/daemon/daemon-harness.js'
import { scaled, spawnCli } from '../support/cli.js'
import { approveDevice } from '../support/headless-user.js'

/** A CLI child with its NDJSON events and stderr. */
interface Running {
  child: ChildProcess
  events: Record<string, unknown>[]
  stderr: () => string
  exit: Promise<number | null>
  waitForEvent(event: string, timeoutMs?: number): Promise<Record<string, unknown>>
}

function start(args: readonly string[], env: NodeJS.ProcessEnv): Running {
  const child = spawnCli(args, { env: env as Record<string, string> })
  child.stdin?.end()
  const events: Record<string, unknown>[] = []
  let buffered = ''
  let err = ''
  child.stdout?.on('data', (d: Buffer) => {
    buffered += d.toString('utf8')
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      if (line.trim()) events.push(JSON.parse(line) as Record<string, unknown>)
    }
  })
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString('utf8')
  })
  const exit = once(child, 'exit').then(([code]) => code as number | null)
  return {
    child,
    events,
    stderr: () => err,
    exit,
    async waitForEvent(event, timeoutMs = 30_000) {
      await waitUntil(
        () => events.some((e) => e.event === event),
        event,
        scaled(timeoutMs),
        () => err,
      )
      return events.find((e) => e.event === event) as Record<string, unknown>
    },
  }
}

describe('issue 19: the daemon on the gateway', { timeout: scaled(180_000) }, () => {
  const f = useDaemonFixture()
  const records = () => f.api.receiver.batches.flatMap((b) => b.records as { seq: number }[])

  test('issue 19: device-flow login, then the daemon: readings reach the API, the token is renewed, an API outage loses nothing, SIGTERM exits 0', async () => {
    const env = await f.setup('gw', 'gw-arm64')
    const login = start(['login', '--json', '--display', 'none'], env)
    f.children.push(login.child)
    const code = await login.waitForEvent('device_code')
    await approveDevice(f.idp.issuer, String(code.user_code))
    assert.equal(await login.exit, 0, login.stderr())
    assert.ok(login.events.some((e) => e.event === 'signed_in'))

    const refreshesBefore = f.idp.refreshes
    const daemon = start(['run', '--json'], env)
    f.children.push(daemon.child)
    await daemon.waitForEvent('ready')
    const publish = async (startSeq: number, count: number) => {
      const sensor = await startSensorSimulator({
        url: f.broker.url,
        deviceId: 'gw-arm64',
        sensor: 'pi-1',
        intervalMs: 20,
        count,
        startSeq,
      })
      await sensor.done
      await sensor.close()
    }
    await publish(0, 20)
    await waitUntil(() => records().length >= 20, '20 records at the API', scaled(30_000), daemon.stderr)
    // 12 s tokens: renewed every few seconds of the daemon's life.
    await daemon.waitForEvent('renewed')
    assert.ok(f.idp.refreshes > refreshesBefore, 'the IdP saw a refresh_token grant')

    const stderrBefore = daemon.stderr().length
    await f.api.setMode('down')
    await publish(20, 10)
    await waitUntil(
      () => /upload of \S+ failed/.test(daemon.stderr().slice(stderrBefore)),
      'the uploader meeting the outage',
      scaled(30_000),
      daemon.stderr,
    )
    await f.api.setMode('up')
    await waitUntil(
      () => records().length >= 30,
      '30 records after the outage',
      scaled(60_000),
      daemon.stderr,
    )
    assert.deepEqual(
      records().map((r) => r.seq),
      Array.from({ length: 30 }, (_, i) => i),
      'every reading once, in order',
    )

    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
    assert.ok(daemon.events.some((e) => e.event === 'stopped'))
    for (const secret of [...f.idp.issued.accessTokens, ...f.idp.issued.refreshTokens]) {
      assert.ok(!(JSON.stringify(daemon.events) + daemon.stderr()).includes(secret), 'no token in the output')
    }
  })

  test('issue 19: systemd notify from the daemon: READY=1, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM', async () => {
    const env = await f.setup('notify', 'gw-arm64-notify')
    // A stand-in for systemd-notify(1), a native program run by the (emulated) daemon.
    const bin = join(f.dir, 'bin')
    await mkdir(bin, { recursive: true })
    await writeFile(join(bin, 'systemd-notify'), '#!/bin/sh\necho "$*" >> "$NOTIFY_SOCKET"\n', {
      mode: 0o755,
    })
    const notifyLog = join(f.dir, 'notify.log')
    const daemon = start(['run', '--json'], {
      ...env,
      NOTIFY_SOCKET: notifyLog,
      WATCHDOG_USEC: '2000000',
      PATH: `${bin}:${process.env.PATH ?? ''}`,
    })
    f.children.push(daemon.child)
    const logged = () => readFile(notifyLog, 'utf8').catch(() => '')
    let text = ''
    const deadline = Date.now() + scaled(30_000)
    while (!/READY=1/.test(text) || (text.match(/WATCHDOG=1/g) ?? []).length < 2) {
      if (Date.now() > deadline) throw new Error(`no READY/WATCHDOG: ${text}\n${daemon.stderr()}`)
      await new Promise((r) => setTimeout(r, 100))
      text = await logged()
    }
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
    const stopDeadline = Date.now() + scaled(10_000)
    while (!/STOPPING=1/.test(text)) {
      if (Date.now() > stopDeadline) throw new Error(`no STOPPING=1: ${text}`)
      await new Promise((r) => setTimeout(r, 100))
      text = await logged()
    }
  })
})
