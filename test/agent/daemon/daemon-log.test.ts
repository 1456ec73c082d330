/**
 * Issue 21: what the daemon writes to the journal. In this process: `runDaemon` with a seeded
 * store, a refresh grant that hands out 4 s tokens (no IdP: the refresh callback is injected, as
 * the CLI injects its own), a real spool, and a node:http API on loopback that answers 401 to
 * its first request. At the default level: no line per batch or per renewal, a summary line per
 * period; with a debug sink: one line per batch and one per token request, the uploader's after a
 * 401 included; `--json` events for every token request at both levels.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { runDaemon } from '../../../src/agent/daemon/daemon.js'
import { loadConfig } from '../../../src/config/load.js'
import type { RefreshFunction } from '../../../src/store/cache.js'
import { openSpool } from '../../../src/telemetry/spool/spool.js'
import { newTestDevice, seedCachedToken } from '../../support/cli.js'
import { closeServer, listen } from '../../support/net.js'
import { waitUntil } from './daemon-harness.js'

interface TestApiServer {
  url: string
  server: Server
  /** Statuses answered, in order. */
  statuses: number[]
}

/** An ingest route that answers 401 to the first request, 503 to the second, 200 to every other one. */
async function startApi(): Promise<TestApiServer> {
  const statuses: number[] = []
  const server = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      const status = statuses.length === 0 ? 401 : statuses.length === 1 ? 503 : 200
      statuses.push(status)
      res.writeHead(status, { 'content-type': 'application/json', 'retry-after': '1' })
      res.end(status === 200 ? '{}' : '{"error":"unavailable"}')
    })
  })
  const port = await listen(server)
  return { url: `http://127.0.0.1:${port}/ingest`, server, statuses }
}

interface Run {
  logs: string[]
  warnings: string[]
  debugs: string[]
  events: Record<string, unknown>[]
  refreshes: number
  api: TestApiServer
  stop(): Promise<void>
}

/** Starts the daemon on a fresh device with `records` spooled; `debug` adds the debug sink. */
async function startRun(root: string, options: { debug: boolean; records: number }): Promise<Run> {
  const api = await startApi()
  const device = newTestDevice(root, { issuer: 'http://127.0.0.1:9/' })
  await seedCachedToken(device, { lifetimeMs: 4000 })
  const spool = await openSpool(device.stateDir)
  await spool.append(Array.from({ length: options.records }, (_, seq) => ({ seq })))
  await spool.close()
  const config = await loadConfig({
    options: {},
    env: { ...device.env, EDGETOKEN_TELEMETRY_ENDPOINT: api.url, EDGETOKEN_TELEMETRY_BATCH_MAX_RECORDS: '5' },
  })
  const run: Run = {
    logs: [],
    warnings: [],
    debugs: [],
    events: [],
    refreshes: 0,
    api,
    stop: async () => {},
  }
  let n = 0
  const refresh: RefreshFunction = async () => {
    run.refreshes += 1
    n += 1
    return {
      accessToken: `access-${n}`,
      tokenType: 'bearer',
      expiresAt: Date.now() + 4000,
      scopes: ['telemetry:write'],
      refreshToken: `refresh-${n}`,
    }
  }
  const controller = new AbortController()
  const done = runDaemon({
    config,
    env: device.env,
    signal: controller.signal,
    log: (line) => run.logs.push(line),
    warn: (line) => run.warnings.push(line),
    ...(options.debug ? { debug: (line: string) => run.debugs.push(line) } : {}),
    emit: (event) => run.events.push({ ...event }),
    refreshFor: () => refresh,
    idlePollMs: 100,
    shutdownTimeoutMs: 3000,
    summaryIntervalMs: 1000,
  })
  run.stop = async () => {
    controller.abort()
    await done
    await closeServer(api.server)
  }
  return run
}

const count = (events: Record<string, unknown>[], name: string) =>
  events.filter((e) => e.event === name).length

/**
 * Every token request so far is a `renewed` event, the uploader's after the 401 included. Waited
 * for while running: a refresh may be in flight at any moment (its event follows its answer).
 */
async function everyRefreshReported(run: Run): Promise<void> {
  await waitUntil(
    () => count(run.events, 'renewed') === run.refreshes,
    'a renewed event for every refresh',
    5000,
    () => `${count(run.events, 'renewed')} events, ${run.refreshes} refreshes`,
  )
}

describe('issue 21: the daemon log', { timeout: 60_000 }, () => {
  let root: string
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'edgetoken-daemon-log-'))
  })
  after(async () => {
    await rm(root, { recursive: true, force: true })
  })

  test('issue 21: at the default level no line per batch or per renewal; a summary line per period', async () => {
    const run = await startRun(root, { debug: false, records: 20 })
    try {
      // The 401 costs a refresh of the uploader's; the renewer renews the 4 s token 1-2 s in.
      await waitUntil(
        () => count(run.events, 'uploaded') >= 4 && run.refreshes >= 2,
        'four batches and two refreshes',
        20_000,
        () => run.logs.join('\n'),
      )
      await waitUntil(
        () => run.logs.some((l) => /last 1 s: uploaded [1-9]/.test(l)),
        'a summary line with uploads',
        10_000,
        () => run.logs.join('\n'),
      )
      await everyRefreshReported(run)
    } finally {
      await run.stop()
    }
    assert.deepEqual(run.debugs, [])
    const all = [...run.logs, ...run.warnings].join('\n')
    assert.doesNotMatch(all, /uploaded batch/, 'no line per batch')
    assert.doesNotMatch(all, /renewed the access token/, 'no line per renewal')
    assert.deepEqual(run.api.statuses.slice(0, 2), [401, 503])
    // An outage is two lines: its first failure, and the delivery after it.
    assert.equal(
      run.warnings.filter((l) => /^upload of \S+ failed/.test(l)).length,
      1,
      run.warnings.join('\n'),
    )
    assert.equal(
      run.logs.filter((l) =>
        /^edgetoken: uploads resumed: batch \S+ delivered after 1 retry \(\d+ s\)$/.test(l),
      ).length,
      1,
      run.logs.join('\n'),
    )
    const summaries = run.logs.filter((l) => l.includes('last 1 s:'))
    for (const line of summaries) {
      assert.match(
        line,
        /^edgetoken: last 1 s: uploaded \d+ records? in \d+ batch(es)?, \d+ renewals?; spool \d+ pending$/,
      )
    }
    // The summaries add up to what happened (the last period may be cut short by the stop).
    const uploadedInSummaries = summaries.reduce((sum, l) => sum + Number(/uploaded (\d+)/.exec(l)?.[1]), 0)
    assert.ok(uploadedInSummaries <= 20 && uploadedInSummaries > 0, summaries.join('\n'))
  })

  test('issue 21: logLevel comes from the config file or EDGETOKEN_LOG_LEVEL, info or debug only', async () => {
    const { writeFile } = await import('node:fs/promises')
    const file = join(root, 'log-level.json')
    await writeFile(file, JSON.stringify({ logLevel: 'debug' }))
    const base = { HOME: root, XDG_CONFIG_HOME: join(root, 'xdg') }
    assert.equal((await loadConfig({ options: {}, env: base })).logLevel, undefined, 'default: info')
    assert.equal(
      (await loadConfig({ options: {}, env: { ...base, EDGETOKEN_CONFIG: file } })).logLevel,
      'debug',
    )
    const env = { ...base, EDGETOKEN_CONFIG: file, EDGETOKEN_LOG_LEVEL: 'info' }
    assert.equal((await loadConfig({ options: {}, env })).logLevel, 'info', 'the environment wins')
    await assert.rejects(loadConfig({ options: {}, env: { ...base, EDGETOKEN_LOG_LEVEL: 'verbose' } }), {
      code: 'ERR_CONFIG',
      message: /EDGETOKEN_LOG_LEVEL must be one of info, debug/,
    })
  })

  test('issue 21: with --debug a line per batch and one per token request, the one after a 401 included', async () => {
    const run = await startRun(root, { debug: true, records: 20 })
    try {
      await waitUntil(
        () => count(run.events, 'uploaded') >= 4 && run.refreshes >= 2,
        'four batches and two refreshes',
        20_000,
        () => run.logs.join('\n'),
      )
      await everyRefreshReported(run)
    } finally {
      await run.stop()
    }
    const batchLines = run.debugs.filter((l) =>
      /^edgetoken: uploaded batch \S+ seq \d+ \(\d+ records\)$/.test(l),
    )
    assert.equal(batchLines.length, count(run.events, 'uploaded'))
    const renewalLines = run.debugs.filter((l) =>
      /^edgetoken: renewed the access token; expires \S+Z/.test(l),
    )
    assert.equal(renewalLines.length, count(run.events, 'renewed'), run.debugs.join('\n'))
    assert.doesNotMatch(run.logs.join('\n'), /uploaded batch|renewed the access token/, 'not on the info log')
  })
})
