#!/usr/bin/env node
// Benchmark (not a test) of the idle daemon: `node dist/cli.js run` with a signed-in account, an
// empty spool, a telemetry endpoint on loopback and no MQTT, left alone; samples /proc/<pid>
// to print its idle RSS and wake-ups per second (voluntary context switches of all its threads).
// Goals on a Raspberry-Pi-class machine and here: idle RSS <= 60 MiB, <= 1 wake-up/s; an idle
// daemon must also not write to the SD card (it takes no lock file while idle).
//
// Usage: npm run build && node test/bench/bench-daemon.mjs [--seconds 30] [--warmup-seconds 15] [--records 0] [--cli dist/cli.js]
// EDGETOKEN_TEST_NODE and EDGETOKEN_TEST_CLI_PREFIX (as in test/support/cli.ts) run the daemon on
// another node, e.g. an emulated arm64 one (test/arm64.sh); RSS and wake-ups are then the
// emulator's process, the guest's heap and code plus the emulator's own overhead.
//
// --records N spools N records (`edgetoken send`) before the start: the daemon uploads them during the
// warm-up, so the window measures the idle state after uploads (the upload lock must be given up).
//
// The warm-up is 15 s because V8's memory reducer runs up to three compacting GCs about 8-10 s after
// start (start-up grew the heap); each wakes all V8 worker threads dozens of times. That one-time
// burst is start-up, not idle: with a 5 s warm-up it dominates the window (about 2.5 wake-ups/s),
// from 11 s on the daemon idles like a bare `node -e "setInterval(...)"`. Use --warmup-seconds 5 to
// see it.
// The store is seeded with a signed-in account whose access token lives an hour (as
// bench-token.mjs does, no IdP needed): renewal is due long after the measurement, so the run
// measures the steady idle state. The endpoint is a node:http server that is never called while
// the spool is empty. Linux only (/proc).
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'

const root = new URL('../..', import.meta.url).pathname
const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '30' },
    records: { type: 'string', default: '0' },
    'warmup-seconds': { type: 'string', default: '15' },
    cli: { type: 'string', default: join(root, 'dist', 'cli.js') },
  },
})
const seconds = Math.max(5, Number(values.seconds) || 30)
const warmupSeconds = Math.max(1, Number(values['warmup-seconds']) || 15)
const cli = resolve(values.cli)
if (!existsSync(cli)) {
  console.error(`bench-daemon: ${cli} is missing; run 'npm run build' first`)
  process.exit(2)
}
if (!existsSync('/proc/self/status')) {
  console.error('bench-daemon: needs /proc (Linux)')
  process.exit(2)
}
const dist = join(cli, '..')
const [command, ...launcherArgs] = [
  ...(process.env.EDGETOKEN_TEST_CLI_PREFIX ?? '').split(' ').filter(Boolean),
  process.env.EDGETOKEN_TEST_NODE || process.execPath,
]

const work = mkdtempSync(join(tmpdir(), 'edgetoken-bench-daemon-'))
process.on('exit', () => rmSync(work, { recursive: true, force: true }))
const stateDir = join(work, 'state')
const keyFile = join(work, 'key')
writeFileSync(keyFile, 'd'.repeat(48), { mode: 0o600 })
const authority = 'http://127.0.0.1:9'
const clientId = 'bench-client'

let posts = 0
const api = createServer((req, res) => {
  posts++
  req.resume()
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end('{"accepted":0}')
})
await new Promise((r) => api.listen(0, '127.0.0.1', r))
const endpoint = `http://127.0.0.1:${api.address().port}/ingest`

const env = {
  PATH: process.env.PATH,
  HOME: work,
  EDGETOKEN_AUTHORITY: authority,
  EDGETOKEN_CLIENT_ID: clientId,
  EDGETOKEN_SCOPES: 'openid offline_access telemetry:write',
  EDGETOKEN_STATE_DIR: stateDir,
  EDGETOKEN_KEY_FILE: keyFile,
  EDGETOKEN_DEVICE_ID: 'bench-device',
  ...(process.env.BENCH_NO_ENDPOINT ? {} : { EDGETOKEN_TELEMETRY_ENDPOINT: endpoint }),
}

// Seed the store through the built library, as `login` would.
const { openTokenStore } = await import(join(dist, 'lib', 'store', 'token-store.js'))
const { saveSignIn } = await import(join(dist, 'lib', 'store', 'cache.js'))
const store = await openTokenStore({ stateDir, env })
await saveSignIn(store, {
  authority,
  clientId,
  account: { id: 'bench-user', issuer: authority },
  tokenSet: {
    accessToken: `bench-access-token-${Date.now()}`,
    tokenType: 'bearer',
    expiresAt: Date.now() + 3600_000,
    scopes: ['telemetry:write'],
    refreshToken: 'bench-refresh-token',
  },
  requestedScopes: ['openid', 'offline_access', 'telemetry:write'],
})

/** RSS (KiB) of the process and the voluntary context switches of its threads (total and by name). */
function sample(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const rssKiB = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? Number.NaN)
  const anonKiB = Number(/^RssAnon:\s+(\d+)/m.exec(status)?.[1] ?? Number.NaN)
  const fileKiB = Number(/^RssFile:\s+(\d+)/m.exec(status)?.[1] ?? Number.NaN)
  let voluntary = 0
  const byThread = new Map()
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      const s = readFileSync(`/proc/${pid}/task/${task}/status`, 'utf8')
      const n = Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(s)?.[1] ?? 0)
      const name = task === String(pid) ? 'main' : (/^Name:\s+(.*)$/m.exec(s)?.[1] ?? '?')
      voluntary += n
      byThread.set(name, (byThread.get(name) ?? 0) + n)
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return { rssKiB, anonKiB, fileKiB, voluntary, byThread }
}

const records = Math.max(0, Number(values.records) || 0)
if (records > 0) {
  const input = Array.from({ length: records }, (_, i) => JSON.stringify({ n: i, t: 'reading' })).join('\n')
  const sent = spawnSync(command, [...launcherArgs, cli, 'send'], {
    env,
    input: `${input}\n`,
    encoding: 'utf8',
  })
  if (sent.status !== 0) throw new Error(`bench-daemon: send exited ${sent.status}: ${sent.stderr}`)
}

const child = spawn(command, [...launcherArgs, cli, 'run'], { env, stdio: ['ignore', 'ignore', 'pipe'] })
let stderr = ''
child.stderr.on('data', (d) => {
  stderr += d
})
const exited = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })))
let early
exited.then((e) => {
  early = e
})

try {
  await sleep(warmupSeconds * 1000)
  if (early) throw new Error(`the daemon exited during warm-up (${JSON.stringify(early)}): ${stderr}`)
  const start = sample(child.pid)
  const postsBefore = posts
  const t0 = performance.now()
  const rss = [start.rssKiB]
  for (let i = 0; i < seconds; i++) {
    await sleep(1000)
    if (early) throw new Error(`the daemon exited (${JSON.stringify(early)}): ${stderr}`)
    rss.push(sample(child.pid).rssKiB)
  }
  const end = sample(child.pid)
  const elapsedS = (performance.now() - t0) / 1000
  const wakeups = (end.voluntary - start.voluntary) / elapsedS
  const maxRssMiB = Math.max(...rss) / 1024
  const spoolFiles = existsSync(join(stateDir, 'spool')) ? readdirSync(join(stateDir, 'spool')) : []
  const version = spawnSync(
    command,
    [...launcherArgs, '-p', 'process.version + ", " + process.platform + "/" + process.arch'],
    {
      encoding: 'utf8',
    },
  ).stdout.trim()
  console.log(`node ${version} (${[command, ...launcherArgs].join(' ')}); ${cli}`)
  console.log(
    `idle daemon over ${elapsedS.toFixed(1)} s (after ${warmupSeconds} s warm-up, signed in, empty spool, no MQTT; ${records} records uploaded before in ${postsBefore} requests):`,
  )
  console.log(
    `  RSS ${(end.rssKiB / 1024).toFixed(1)} MiB (max ${maxRssMiB.toFixed(1)}; goal <= 60): ${maxRssMiB <= 60 ? 'ok' : 'OVER'}`,
  )
  // File-backed pages are mostly the node binary's code as far as it ran (the optimising compiler's
  // after a busy upload): shared, clean, dropped by the kernel under memory pressure.
  console.log(
    `    of which private (RssAnon) ${(end.anonKiB / 1024).toFixed(1)} MiB, file-backed (RssFile) ${(end.fileKiB / 1024).toFixed(1)} MiB`,
  )
  console.log(
    `  wake-ups ${wakeups.toFixed(2)}/s (voluntary context switches, all threads; goal <= 1): ${wakeups <= 1 ? 'ok' : 'OVER'}`,
  )
  const threads = [...end.byThread]
    .map(([name, n]) => [name, (n - (start.byThread.get(name) ?? 0)) / elapsedS])
    .filter(([, rate]) => rate > 0.05)
    .map(([name, rate]) => `${name} ${rate.toFixed(2)}`)
  console.log(`  by thread (/s): ${threads.join(', ') || 'none'}`)
  const said = stderr.trim().split('\n').filter(Boolean).slice(-3)
  if (said.length > 0) console.log(`  the daemon said (last lines of stderr):\n    ${said.join('\n    ')}`)
  console.log(
    `  API requests while idle: ${posts - postsBefore}; spool directory: ${spoolFiles.join(', ') || '(empty)'}`,
  )
} finally {
  child.kill('SIGTERM')
  await Promise.race([exited, sleep(10_000)])
  if (!early && child.exitCode === null) child.kill('SIGKILL')
  api.close()
}
