/**
 * A whole day compressed, for the machine grants (issue 12): `edgetoken run` with 5-second access
 * tokens (the issue asks for 60 s over 5 minutes; scaled down 12x and 10x to keep the suite
 * short), uploading to the reference API while records keep arriving in the spool.
 */
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'
import { openSpool } from '../../src/telemetry/spool/spool.js'
import { type CliResult, collect, spawnCli, type TestDevice } from '../support/cli.js'

/** A running daemon and its NDJSON events. */
export interface RunningDaemon {
  child: ChildProcess
  events: Record<string, unknown>[]
  /** Waits until an event matches, or fails after `ms`. */
  waitFor(predicate: (e: Record<string, unknown>) => boolean, ms: number): Promise<Record<string, unknown>>
  /** SIGTERM, then the result. */
  stop(): Promise<CliResult>
}

/**
 * Starts `edgetoken run --json` for a device, uploading to `endpoint`.
 *
 * @param device - the device.
 * @param endpoint - the reference API's ingest URL.
 * @param env - more environment.
 * @returns the daemon, once it emitted `ready`.
 */
export async function startDaemon(
  device: TestDevice,
  endpoint: string,
  env: Record<string, string | undefined> = {},
): Promise<RunningDaemon> {
  const child = spawnCli(['run', '--json'], {
    env: {
      ...device.env,
      EDGETOKEN_TELEMETRY_ENDPOINT: endpoint,
      EDGETOKEN_TELEMETRY_LINGER_MS: '0',
      ...env,
    },
    timeoutMs: 110_000,
  })
  const done = collect(child, { timeoutMs: 110_000 })
  const events: Record<string, unknown>[] = []
  let buffered = ''
  child.stdout?.on('data', (b: Buffer) => {
    buffered += b.toString()
    let nl = buffered.indexOf('\n')
    while (nl >= 0) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      if (line.length > 0) events.push(JSON.parse(line) as Record<string, unknown>)
      nl = buffered.indexOf('\n')
    }
  })
  const waitFor = async (predicate: (e: Record<string, unknown>) => boolean, ms: number) => {
    const deadline = Date.now() + ms
    for (;;) {
      const hit = events.find(predicate)
      if (hit) return hit
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGTERM')
        assert.fail(`no such event; events: ${JSON.stringify(events)}; stderr: ${(await done).stderr}`)
      }
      await sleep(50)
    }
  }
  await waitFor((e) => e.event === 'ready', 30_000)
  return {
    child,
    events,
    waitFor,
    stop: async () => {
      child.kill('SIGTERM')
      return done
    },
  }
}

/**
 * Appends one record a second to the device's spool for `seconds` (as `send` would, from this
 * process), while the daemon uploads.
 *
 * @param stateDir - the device's state directory.
 * @param seconds - how long.
 * @param tag - marks the records.
 * @returns how many records were appended.
 */
export async function feedSpool(stateDir: string, seconds: number, tag: string): Promise<number> {
  const spool = await openSpool(stateDir)
  let n = 0
  try {
    const end = Date.now() + seconds * 1000
    while (Date.now() < end) {
      await spool.append([{ sensor: tag, seq: n, at: new Date().toISOString() }])
      n += 1
      await sleep(1000)
    }
  } finally {
    await spool.close()
  }
  return n
}
