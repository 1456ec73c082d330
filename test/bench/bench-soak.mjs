#!/usr/bin/env node
// Benchmark (not a test) of the daemon under load, as in issue 21's soak: `edgetoken run` signed in
// at the test IdP with 10 s access tokens, a sensor publishing 20 readings/s over MQTT (mosquitto),
// `edgetoken send` every 30 s, the API answering 503 for 20 s of every 90 s and 401 once every
// 5 minutes, the broker restarted once half-way. Prints per minute the daemon's peak RSS, its V8
// heap, its CPU (% of one core) and the log lines it wrote; then whether every record arrived
// exactly once and in order, and the totals.
//
// Usage: npm run bench -- soak [--minutes 10] [--rate 20] [--node-options="..."|none] [--debug]
//        node test/bench/bench-soak.mjs [same options] [--cli dist/cli.js] [--sample-ms 100] [--trace FILE]
//          [--node-args="..."]
//
// --node-options: the daemon's NODE_OPTIONS (V8 heap limits). Default: what systemd/edgetoken.service
//   sets, so the figures are those of the shipped unit; `none` runs with node's defaults.
// MALLOC_ARENA_MAX (glibc malloc arenas): the unit's, or this process's when set (`none`: glibc's
//   default, 8 per core).
// --debug: run the daemon with --debug (a line per batch and per renewal) to compare log volume.
// --sample-ms: how often RSS is read from /proc, from the daemon's spawn on (default 100): start-up
//   peaks last a second or two, a 1 s sampling misses most of them. --trace FILE: every sample as
//   NDJSON (ms since spawn, RSS, anonymous and file-backed RSS in KiB), with the daemon's events
//   and other stdout lines. --node-args "...": flags on the daemon's node command line, for those
//   NODE_OPTIONS refuses (e.g. --trace-gc to see the collections in the trace).
//
// Everything runs on 127.0.0.1 (IdP, API, broker) and stops after --minutes (1-60). Needs mosquitto
// and /proc (Linux). The daemon's heap figures come from a 5 s probe loaded into it with --import
// (process.memoryUsage() written to a pipe); CPU is read from /proc every second, RSS every
// --sample-ms. The load average is printed with each minute: on a loaded machine CPU % is noisy.
// The IdP, API and sensor run in this process (through tsx): their CPU is not the daemon's.
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { register } from 'tsx/esm/api'

const root = new URL('../..', import.meta.url).pathname
const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    rate: { type: 'string', default: '20' },
    'node-options': { type: 'string' },
    debug: { type: 'boolean', default: false },
    cli: { type: 'string', default: join(root, 'dist', 'cli.js') },
    'sample-ms': { type: 'string', default: '100' },
    trace: { type: 'string' },
    'node-args': { type: 'string', default: '' },
  },
})
const minutes = Math.min(60, Math.max(1, Number(values.minutes) || 10))
const rate = Math.min(200, Math.max(1, Number(values.rate) || 20))
const cli = resolve(values.cli)
const sampleMs = Math.min(1000, Math.max(20, Number(values['sample-ms']) || 100))
if (!existsSync(cli)) {
  console.error(`bench-soak: ${cli} is missing; run 'npm run build' first`)
  process.exit(2)
}
if (!existsSync('/proc/self/stat')) {
  console.error('bench-soak: needs /proc (Linux)')
  process.exit(2)
}

/** A variable the shipped unit sets (`Environment="NAME=..."` or `Environment=NAME=...`), or undefined. */
function unitEnvironment(name) {
  const unit = readFileSync(join(root, 'systemd', 'edgetoken.service'), 'utf8')
  const line = unit.split('\n').find((l) => new RegExp(`^Environment=("?)${name}=`).test(l))
  if (!line) return undefined
  return line
    .replace(/^Environment=/, '')
    .replace(/^"(.*)"$/, '$1')
    .slice(name.length + 1)
}
const heapFlags =
  values['node-options'] === undefined
    ? (unitEnvironment('NODE_OPTIONS') ?? '')
    : values['node-options'] === 'none'
      ? ''
      : values['node-options']
// glibc's malloc arenas: this process's MALLOC_ARENA_MAX when set (`none`: glibc's default), else the unit's.
const arenaMax =
  process.env.MALLOC_ARENA_MAX === 'none'
    ? undefined
    : (process.env.MALLOC_ARENA_MAX ?? unitEnvironment('MALLOC_ARENA_MAX'))

register()
const [{ startTestIdp }, { startTestApi }, { startBroker }, { approveDevice }, { startRecorder }, sensorMod] =
  await Promise.all([
    import('../support/quiet.ts').then((m) => {
      m.silenceOidcProviderNotices()
      return import('../support/idp.ts')
    }),
    import('../support/api.ts'),
    import('../support/mosquitto.ts'),
    import('../support/headless-user.ts'),
    import('../support/mqtt-recorder.ts'),
    import('../../firmware-bridge/simulators/sensor.ts'),
  ])

const work = mkdtempSync(join(tmpdir(), 'edgetoken-bench-soak-'))
const cleanups = []
process.on('exit', () => rmSync(work, { recursive: true, force: true }))

const idp = await startTestIdp({ accessTokenTtlSeconds: 10, interval: 1 })
cleanups.push(() => idp.close())
const api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
cleanups.push(() => api.close())
const broker = await startBroker()
cleanups.push(() => broker.close())

const deviceId = 'soak-gw'
const keyFile = join(work, 'key')
writeFileSync(keyFile, 's'.repeat(48), { mode: 0o600 })
const configFile = join(work, 'config.json')
writeFileSync(
  configFile,
  JSON.stringify({
    authority: idp.issuer,
    clientId: idp.publicClientId,
    scopes: ['openid', 'offline_access', idp.apiScope],
    deviceId,
    stateDir: join(work, 'state'),
    keyFile,
    mqtt: { url: broker.url },
    telemetry: { endpoint: api.url },
  }),
)
const env = { PATH: process.env.PATH, HOME: work, EDGETOKEN_CONFIG: configFile }

/** Runs the CLI to completion; returns its exit code, stdout and stderr. */
function runCli(args, input, extraEnv = {}) {
  return new Promise((done) => {
    const child = spawn(process.execPath, [cli, ...args], {
      env: { ...env, ...extraEnv },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => {
      out += d
    })
    child.stderr.on('data', (d) => {
      err += d
    })
    child.stdin.end(input)
    child.on('exit', (code) => done({ code, out, err }))
  })
}

// Sign in: `login` with the headless user approving the code.
{
  const login = spawn(process.execPath, [cli, 'login', '--json', '--display', 'none'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let approved = false
  login.stdout.on('data', (d) => {
    out += d
    const code = /"user_code":"([^"]+)"/.exec(out)?.[1]
    if (code && !approved) {
      approved = true
      approveDevice(idp.issuer, code).catch((e) => console.error(`bench-soak: approve: ${e.message}`))
    }
  })
  const [code] = await new Promise((r) => login.on('exit', (...a) => r(a)))
  if (code !== 0) throw new Error(`bench-soak: login exited ${code}`)
}

// The heap probe: process.memoryUsage() every 5 s to fd 3, unref'd (it never keeps the daemon up).
const probe = join(work, 'heap-probe.mjs')
writeFileSync(
  probe,
  `import { writeSync } from 'node:fs'
setInterval(() => {
  const m = process.memoryUsage()
  try { writeSync(3, JSON.stringify({ heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external }) + '\\n') } catch {}
}, 5000).unref()
`,
)
// --node-args: node/V8 flags on the daemon's command line, for those NODE_OPTIONS refuses (--trace-gc).
const nodeArgs = values['node-args'].split(' ').filter(Boolean)
const daemon = spawn(
  process.execPath,
  [...nodeArgs, cli, 'run', '--json', ...(values.debug ? ['--debug'] : [])],
  {
    env: {
      ...env,
      NODE_OPTIONS: `--import=${probe} ${heapFlags}`.trim(),
      ...(arenaMax ? { MALLOC_ARENA_MAX: arenaMax } : {}),
    },
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  },
)
const spawnedAt = Date.now()
const exited = new Promise((r) => daemon.on('exit', (code, signal) => r({ code, signal })))

/** RSS of the daemon (KiB) from /proc/PID/status: total, anonymous (private heap) and file-backed. */
function rssOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kib = (name) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? Number.NaN)
  return { rssKiB: kib('VmRSS'), anonKiB: kib('RssAnon'), fileKiB: kib('RssFile') }
}
// Fine-grained RSS sampling from the spawn on: the peaks over the whole run, the first minute
// (counted from the spawn, start-up included) and the running minute (reset by the minute rows).
const fine = { peakKiB: 0, firstMinuteKiB: 0, minuteKiB: 0, minuteAnonKiB: 0, peakAtMs: 0 }
const trace = []
const sampler = setInterval(() => {
  let s
  try {
    s = rssOf(daemon.pid)
  } catch {
    return // exited
  }
  const t = Date.now() - spawnedAt
  if (s.rssKiB > fine.peakKiB) {
    fine.peakKiB = s.rssKiB
    fine.peakAtMs = t
  }
  if (t < 60_000) fine.firstMinuteKiB = Math.max(fine.firstMinuteKiB, s.rssKiB)
  fine.minuteKiB = Math.max(fine.minuteKiB, s.rssKiB)
  fine.minuteAnonKiB = Math.max(fine.minuteAnonKiB, s.anonKiB)
  if (values.trace) trace.push({ t, ...s })
}, sampleMs)
let early
exited.then((e) => {
  early = e
})

/** Lines of a stream, to a callback. */
function lines(stream, onLine) {
  let buf = ''
  stream.on('data', (d) => {
    buf += d
    let nl = buf.indexOf('\n')
    while (nl >= 0) {
      onLine(buf.slice(0, nl))
      buf = buf.slice(nl + 1)
      nl = buf.indexOf('\n')
    }
  })
}
const stderrLines = []
const events = []
let heap = { heapUsed: 0, heapTotal: 0, external: 0 }
lines(daemon.stderr, (line) => stderrLines.push({ at: Date.now(), line }))
lines(daemon.stdout, (line) => {
  try {
    events.push({ at: Date.now(), ...JSON.parse(line) })
    if (values.trace) trace.push({ t: Date.now() - spawnedAt, event: events.at(-1).event })
  } catch {
    // not an event (e.g. V8's --trace-gc lines, kept in the trace)
    if (values.trace) trace.push({ t: Date.now() - spawnedAt, stdout: line })
  }
})
lines(daemon.stdio[3], (line) => {
  try {
    heap = JSON.parse(line)
  } catch {
    // a torn line
  }
})

const deadline = Date.now() + 30_000
while (!events.some((e) => e.event === 'ready')) {
  if (early || Date.now() > deadline) {
    throw new Error(`bench-soak: the daemon did not start: ${stderrLines.map((l) => l.line).join('\n')}`)
  }
  await sleep(100)
}

const CLK_TCK = 100 // getconf CLK_TCK on Linux
function sample(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return {
    rssKiB: Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? Number.NaN),
    anonKiB: Number(/^RssAnon:\s+(\d+)/m.exec(status)?.[1] ?? Number.NaN),
    // utime and stime are fields 14 and 15 of /proc/PID/stat (12 and 13 after the comm field).
    cpuS: (Number(fields[11]) + Number(fields[12])) / CLK_TCK,
  }
}

// --- load ---------------------------------------------------------------------------------------
const intervalMs = Math.round(1000 / rate)
const sensors = []
let nextSeq = 0
async function startSensor() {
  const s = await sensorMod.startSensorSimulator({
    url: broker.url,
    deviceId,
    sensor: 'soak',
    intervalMs,
    startSeq: nextSeq,
  })
  sensors.push(s)
  return s
}
/** Stops the running sensor; the next one continues its sequence. */
async function stopSensor(s) {
  await s.close()
  nextSeq += s.published
}
let sensor = await startSensor()

let sent = 0
let sendFailures = 0
const sendEvery = setInterval(() => {
  const records = Array.from({ length: 10 }, () => JSON.stringify({ sensor: 'send', seq: sent++ }))
  runCli(['send'], `${records.join('\n')}\n`).then((r) => {
    if (r.code !== 0) sendFailures += 1
  })
}, 30_000)

const started = Date.now()
const totalMs = minutes * 60_000
const at = (ms) => started + ms
const outages = []
const schedule = []
// 503 for 20 s of every 90 s (from 60 s on), 401 once every 5 minutes (from 150 s on).
for (let t = 60_000; t < totalMs - 20_000; t += 90_000)
  schedule.push({ t, what: 'down' }, { t: t + 20_000, what: 'up' })
for (let t = 150_000; t < totalMs; t += 300_000) schedule.push({ t, what: '401' })
schedule.push({ t: Math.floor(totalMs / 2), what: 'broker' })
schedule.sort((a, b) => a.t - b.t)

async function restartBroker() {
  await stopSensor(sensor)
  // This broker keeps nothing across a restart (persistence false): readings it acknowledged but
  // had not yet delivered to the daemon would be lost by the broker, not the daemon. Let it deliver.
  await sleep(3000)
  await broker.restart()
  // The broker forgot everything (no persistence): wait until the daemon is back (its retained
  // `online`) and give its resubscription a moment, then publish again.
  const until = Date.now() + 30_000
  for (;;) {
    const rec = await startRecorder(broker, `edgetoken/${deviceId}/status`)
    await rec.settle()
    const online = rec.messages.some((m) => m.retain && m.payload.toString() === 'online')
    await rec.close()
    if (online || Date.now() > until) break
    await sleep(200)
  }
  await sleep(1000)
  sensor = await startSensor()
}

const perMinute = []
const first = { t: Date.now(), ...sample(daemon.pid) }
let minuteStart = first
let minutePeakRss = minuteStart.rssKiB
let minutePeakAnon = minuteStart.anonKiB
let minutePeakHeap = 0
let peakRss = minutePeakRss
let lastLineCount = 0
let lastRenewed = 0
let lastUploaded = 0
try {
  // One row per minute; the run ends with the last one.
  while (perMinute.length < minutes) {
    await sleep(1000)
    if (early) throw new Error(`bench-soak: the daemon exited (${JSON.stringify(early)})`)
    while (schedule.length > 0 && Date.now() >= at(schedule[0].t)) {
      const { what } = schedule.shift()
      if (what === 'down') {
        await api.setMode('unavailable', { retryAfterSeconds: 5 })
        outages.push(Date.now())
      } else if (what === 'up') await api.setMode('up')
      else if (what === '401') await api.setMode('unauthorized-once')
      else if (what === 'broker') await restartBroker()
    }
    const s = sample(daemon.pid)
    minutePeakRss = Math.max(minutePeakRss, s.rssKiB)
    minutePeakAnon = Math.max(minutePeakAnon, s.anonKiB)
    peakRss = Math.max(peakRss, s.rssKiB)
    minutePeakHeap = Math.max(minutePeakHeap, heap.heapTotal)
    if (Date.now() - minuteStart.t >= 60_000) {
      const lineCount = stderrLines.length
      const renewed = events.filter((e) => e.event === 'renewed').length
      const uploaded = events.filter((e) => e.event === 'uploaded').reduce((n, e) => n + e.records, 0)
      const row = {
        minute: perMinute.length + 1,
        // The first row's peak includes the start-up (sampled from the spawn on).
        rssMiB: Math.max(minutePeakRss, fine.minuteKiB) / 1024,
        anonMiB: Math.max(minutePeakAnon, fine.minuteAnonKiB) / 1024,
        heapUsedMiB: heap.heapUsed / 2 ** 20,
        heapTotalMiB: minutePeakHeap / 2 ** 20,
        cpu: ((s.cpuS - minuteStart.cpuS) / ((Date.now() - minuteStart.t) / 1000)) * 100,
        lines: lineCount - lastLineCount,
        renewals: renewed - lastRenewed,
        uploaded: uploaded - lastUploaded,
      }
      perMinute.push(row)
      if (perMinute.length === 1) {
        console.log(`node ${process.version}, ${process.platform}/${process.arch}; ${cli}`)
        console.log(
          `daemon NODE_OPTIONS: ${heapFlags || '(none: node defaults)'}; MALLOC_ARENA_MAX ${arenaMax ?? '(glibc default)'}${nodeArgs.length > 0 ? `; node ${nodeArgs.join(' ')}` : ''}${values.debug ? '; --debug' : ''}; ${rate} readings/s, send every 30 s, 503 20 s of 90, 401 every 5 min, broker restart at ${minutes / 2} min`,
        )
        console.log(
          'min  peak RSS (private)  heap used/total  CPU %  log lines  renewals  records uploaded  load (1 min)',
        )
      }
      console.log(
        `${String(row.minute).padStart(3)}  ${row.rssMiB.toFixed(1).padStart(6)} (${row.anonMiB.toFixed(1).padStart(5)}) MiB  ${row.heapUsedMiB.toFixed(1).padStart(5)}/${row.heapTotalMiB.toFixed(1).padEnd(5)} MiB  ${row.cpu.toFixed(1).padStart(5)}  ${String(row.lines).padStart(9)}  ${String(row.renewals).padStart(8)}  ${String(row.uploaded).padStart(16)}  ${loadavg()[0].toFixed(2).padStart(12)}`,
      )
      lastLineCount = lineCount
      lastRenewed = renewed
      lastUploaded = uploaded
      minuteStart = { t: Date.now(), ...s }
      minutePeakRss = s.rssKiB
      minutePeakAnon = s.anonKiB
      fine.minuteKiB = s.rssKiB
      fine.minuteAnonKiB = s.anonKiB
      minutePeakHeap = 0
    }
  }

  // --- drain and check ----------------------------------------------------------------------------
  clearInterval(sendEvery)
  await stopSensor(sensor)
  await api.setMode('up')
  await sleep(1000) // a `send` in flight
  const published = nextSeq
  const records = () => api.receiver.batches.filter((b) => b.deviceId === deviceId).flatMap((b) => b.records)
  const drainUntil = Date.now() + 60_000
  while (records().length < published + sent && Date.now() < drainUntil) await sleep(500)
  const all = records()
  const check = (name, expected) => {
    const seqs = all.filter((r) => r.sensor === name).map((r) => r.seq)
    const unique = new Set(seqs).size
    const inOrder = seqs.every((s, i) => i === 0 || s > seqs[i - 1])
    const have = new Set(seqs)
    const missing = Array.from({ length: expected }, (_, i) => i).filter((i) => !have.has(i))
    const gaps = missing.length === 0 ? '' : `, missing seq ${missing.slice(0, 10).join(' ')}`
    return `${unique} of ${expected} (${seqs.length - unique} duplicates, ${inOrder ? 'in order' : 'OUT OF ORDER'}${gaps})`
  }
  const elapsedMin = (Date.now() - started) / 60_000
  const end = sample(daemon.pid)
  const cpuMean = ((end.cpuS - first.cpuS) / ((Date.now() - first.t) / 1000)) * 100
  const renewals = events.filter((e) => e.event === 'renewed').length
  const rows = perMinute
  const mean = (k) => rows.reduce((s, r) => s + r[k], 0) / Math.max(1, rows.length)
  // The first minute holds the start-up lines: the rate per day is taken from the minutes after it.
  const steady = rows.length > 1 ? rows.slice(1) : rows
  const steadyLines = steady.reduce((s, r) => s + r.lines, 0) / Math.max(1, steady.length)
  console.log(`after ${elapsedMin.toFixed(1)} min:`)
  console.log(`  MQTT readings delivered ${check('soak', published)}; send records ${check('send', sent)}`)
  console.log(
    `  peak RSS ${(Math.max(peakRss, fine.peakKiB) / 1024).toFixed(1)} MiB (goal <= 90) at ${(fine.peakAtMs / 1000).toFixed(1)} s, first minute from the spawn ${(fine.firstMinuteKiB / 1024).toFixed(1)} MiB (sampled every ${sampleMs} ms); CPU ${cpuMean.toFixed(1)}% of one core (incl. the drain)`,
  )
  console.log(
    `  load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')} (2-core machine: above 2 the daemon waits for a core)`,
  )
  console.log(
    `  ${stderrLines.length} log lines (${mean('lines').toFixed(1)}/min; after the first minute ${steadyLines.toFixed(1)}/min, ~${Math.round(steadyLines * 1440)}/day), ${renewals} renewals, ${outages.length} API outages, ${sendFailures} failed sends`,
  )
  const kinds = new Map()
  for (const { line } of stderrLines) {
    const kind = line
      .replace(/^edgetoken: (warning: )?/, '$1')
      .replace(/[0-9a-f]{8,}|\d[\d:.TZ-]*/gi, '#')
      .slice(0, 60)
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1)
  }
  console.log('  log lines by kind:')
  for (const [kind, n] of [...kinds].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
    console.log(`    ${String(n).padStart(5)}  ${kind}`)
  }
} finally {
  clearInterval(sendEvery)
  clearInterval(sampler)
  if (values.trace) writeFileSync(values.trace, `${trace.map((r) => JSON.stringify(r)).join('\n')}\n`)
  for (const s of sensors) await s.close().catch(() => {})
  daemon.kill('SIGTERM')
  await Promise.race([exited, sleep(15_000)])
  if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGKILL')
  for (const c of cleanups.reverse()) await c().catch(() => {})
}
