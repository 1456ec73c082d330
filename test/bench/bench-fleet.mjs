#!/usr/bin/env node
// Fleet simulation (issue 17), run only when asked: `npm run bench -- fleet [--agents 1000] ...`.
// N agents in one process, each with the library's own pieces from dist/: an encrypted token store
// (its own state directory), the daemon's token wiring (agent/daemon/daemon-tokens.js: silent
// acquisition and the renewer), a spool and the Uploader's run loop; against one local IdP (oidc-provider, 60 s access tokens, interval 5 with
// slow_down on) and the reference API, both behind counting fronts on 127.0.0.1 that can answer 503.
// The IdP, the API, their fronts and the headless user run in a second process (`--serve`, spawned
// here, driven over IPC), so the agents' process has its own core, as a fleet's devices would.
//
// Phases:
//   1. sign-in: N device-code sign-ins started within one second, approved by a headless user
//      (8 at a time); counts `slow_down` answers (goal 0).
//   2. warm-up (--warmup-seconds, default 30; not scored), then steady (--steady-seconds, default
//      180): token requests and uploads per second, peak/mean (goal <= 2 each).
//   3. outage (--outage-seconds, default 30): IdP and API answer 503, the first half with
//      `Retry-After: 10`, the second half without; attempts per second (bounded: <= agents/s).
//   4. recovery (--recovery-seconds, default 10): peak/mean of token requests and uploads (<= 2).
// Each agent appends one reading every --record-seconds (default 10) at its own phase.
// Loopback only, bounded in time; it stops by itself. `--dist DIR` runs another build's `lib`
// directory (e.g. `npx tsc -p tsconfig.json --outDir /tmp/x/lib`, with node_modules reachable from
// there) instead of dist/lib; `--series` also prints the per-second counts of each phase.
import { fork } from 'node:child_process'
import { setMaxListeners } from 'node:events'
import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, Agent as HttpAgent, request as httpRequest } from 'node:http'
import { cpus, loadavg, tmpdir, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'

const root = new URL('../..', import.meta.url).pathname
const { values } = parseArgs({
  options: {
    agents: { type: 'string', default: '1000' },
    'warmup-seconds': { type: 'string', default: '30' },
    'steady-seconds': { type: 'string', default: '180' },
    'outage-seconds': { type: 'string', default: '30' },
    'recovery-seconds': { type: 'string', default: '10' },
    'record-seconds': { type: 'string', default: '10' },
    approvers: { type: 'string', default: '8' },
    serve: { type: 'boolean', default: false },
    epoch: { type: 'string' },
    // The build to run (its `lib` directory); default this checkout's dist/lib (`npm run build`).
    dist: { type: 'string' },
    // Also print every phase's per-second counts (where a peak came from).
    series: { type: 'boolean', default: false },
  },
})
const N = Math.max(1, Number(values.agents) || 1000)
const WARMUP = Number(values['warmup-seconds'])
const STEADY = Number(values['steady-seconds'])
const OUTAGE = Number(values['outage-seconds'])
const RECOVERY = Number(values['recovery-seconds'])
const RECORD_S = Math.max(1, Number(values['record-seconds']) || 10)
const APPROVERS = Math.max(1, Number(values.approvers) || 8)
const started = Number(values.epoch ?? Date.now())
const second = () => Math.floor((Date.now() - started) / 1000)
const log = (s) => process.stderr.write(`bench-fleet: ${s}\n`)

if (values.serve) await serve()
else await agents()

/** The second process: IdP, API, their fronts and the headless user, driven over IPC. */
async function serve() {
  const { register } = await import('tsx/esm/api')
  register()
  const { silenceOidcProviderNotices } = await import('../support/quiet.ts')
  silenceOidcProviderNotices()
  const { startTestIdp } = await import('../support/idp.ts')
  const { startTestApi } = await import('../support/api.ts')
  const { approveDevice } = await import('../support/headless-user.ts')

  // ---- counting fronts that can answer 503
  /** A loopback front of `origin`, counting requests per second by kind; `outage` answers 503. */
  async function front(origin, kindOf) {
    const agent = new HttpAgent({ keepAlive: true, maxSockets: 64 })
    const counts = new Map() // kind -> Map(second -> n)
    const state = { outage: false, retryAfter: undefined }
    const count = (kind) => {
      const perSecond = counts.get(kind) ?? new Map()
      counts.set(kind, perSecond)
      const s = second()
      perSecond.set(s, (perSecond.get(s) ?? 0) + 1)
    }
    const server = createServer((req, res) => {
      const chunks = []
      req.on('data', (c) => chunks.push(c))
      req.on('end', () => {
        const body = Buffer.concat(chunks)
        const kind = kindOf(req, body.toString('utf8'))
        if (kind) count(kind)
        if (state.outage && kind) {
          count(`${kind}:503`)
          res.writeHead(503, {
            'content-type': 'application/json',
            ...(state.retryAfter === undefined ? {} : { 'retry-after': String(state.retryAfter) }),
          })
          res.end('{"error":"temporarily_unavailable"}')
          return
        }
        const up = httpRequest(
          `${origin}${req.url}`,
          { method: req.method, headers: { ...req.headers, host: new URL(origin).host }, agent },
          (answer) => {
            res.writeHead(answer.statusCode ?? 502, answer.headers)
            answer.pipe(res)
          },
        )
        up.on('error', () => {
          res.writeHead(502)
          res.end()
        })
        up.end(body)
      })
    })
    server.keepAliveTimeout = 120_000
    await new Promise((r) => server.listen(0, '127.0.0.1', r))
    return {
      url: `http://127.0.0.1:${server.address().port}`,
      state,
      counts,
      close: () => {
        server.closeAllConnections()
        server.close()
        agent.destroy()
      },
    }
  }

  // oidc-provider's in-memory adapter keeps at most 1000 entries (an LRU of its own, created inside
  // the provider): a fleet's device codes, sessions, grants and rotated refresh tokens are many more,
  // and an evicted user code or grant would fail sign-ins and refreshes. In this process only, its LRU
  // class keeps every entry until its own expiry (same methods, no size bound).
  const oidcLib = join(realpathSync(join(root, 'node_modules', 'oidc-provider')), 'lib')
  const { default: LRU } = await import(pathToFileURL(join(oidcLib, 'helpers', 'lru.js')).href)
  const entries = new WeakMap()
  const mapOf = (lru) => {
    let m = entries.get(lru)
    if (m === undefined) {
      m = new Map()
      entries.set(lru, m)
    }
    return m
  }
  const live = (lru, key) => {
    const e = mapOf(lru).get(key)
    if (e?.expiry !== undefined && e.expiry <= Date.now()) {
      mapOf(lru).delete(key)
      return undefined
    }
    return e
  }
  Object.assign(LRU.prototype, {
    get(key) {
      return live(this, key)?.value
    },
    set(key, value, { maxAge } = {}) {
      const expiry = typeof maxAge === 'number' && Number.isFinite(maxAge) ? Date.now() + maxAge : undefined
      mapOf(this).set(key, { value, expiry })
      return this
    },
    has(key) {
      return live(this, key) !== undefined
    },
    delete(key) {
      return mapOf(this).delete(key)
    },
    clear() {
      mapOf(this).clear()
    },
  })
  Object.defineProperty(LRU.prototype, 'size', {
    configurable: true,
    get() {
      return mapOf(this).size
    },
  })
  const idp = await startTestIdp({ accessTokenTtlSeconds: 60, interval: 5, slowDown: true })
  const api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
  const idpFront = await front(idp.issuer, (req, body) => {
    if (req.url !== '/token') return req.url === '/device/auth' ? 'device_auth' : undefined
    const grant = new URLSearchParams(body).get('grant_type') ?? ''
    return grant === 'refresh_token' ? 'token' : grant.endsWith('device_code') ? 'poll' : 'other'
  })
  const apiFront = await front(new URL(api.url).origin, (req) =>
    req.method === 'POST' ? 'upload' : undefined,
  )
  const discovery = await (await fetch(`${idp.issuer}/.well-known/openid-configuration`)).json()
  const rebase = (u) => u.replace(idp.issuer, idpFront.url)
  process.on('message', async (m) => {
    if (m.type === 'approve') {
      let next = 0
      await Promise.all(
        Array.from({ length: APPROVERS }, async () => {
          while (next < m.userCodes.length) {
            const code = m.userCodes[next++]
            await approveDevice(idp.issuer, code)
          }
        }),
      )
      process.send({ type: 'approved' })
    } else if (m.type === 'outage') {
      for (const f of [idpFront, apiFront]) Object.assign(f.state, { outage: m.on, retryAfter: m.retryAfter })
    } else if (m.type === 'report') {
      const counts = {}
      for (const f of [idpFront, apiFront])
        for (const [kind, perSecond] of f.counts) counts[kind] = [...perSecond]
      process.send({
        type: 'report',
        counts,
        polls: idp.polls.length,
        slowDowns: idp.polls.filter((p) => p.error === 'slow_down').length,
        batches: api.receiver.batches.length,
        rssMiB: process.resourceUsage().maxRSS / 1024,
      })
    } else if (m.type === 'close') {
      idpFront.close()
      apiFront.close()
      await api.close()
      await idp.close()
      process.exit(0)
    }
  })
  process.send({
    type: 'ready',
    issuer: idp.issuer,
    clientId: idp.publicClientId,
    apiScope: idp.apiScope,
    ingest: `${apiFront.url}${new URL(api.url).pathname}`,
    server: {
      issuer: idp.issuer,
      dialect: 'oidc',
      tokenEndpoint: rebase(discovery.token_endpoint),
      deviceAuthorizationEndpoint: rebase(discovery.device_authorization_endpoint),
      jwksUri: rebase(discovery.jwks_uri),
    },
  })
}

/** The agents' process: N agents of the library's own pieces, against the served IdP and API. */
async function agents() {
  const dist = values.dist === undefined ? join(root, 'dist', 'lib') : resolve(values.dist)
  const lib = await import(pathToFileURL(join(dist, 'index.js')).href)
  const { createDaemonTokens } = await import(
    pathToFileURL(join(dist, 'agent', 'daemon', 'daemon-tokens.js')).href
  )
  const quiet = { log() {}, warn() {}, debug() {}, emit() {} }
  const work = mkdtempSync(join(tmpdir(), 'edgetoken-fleet-'))
  process.on('exit', () => rmSync(work, { recursive: true, force: true }))
  const child = fork(
    new URL(import.meta.url).pathname,
    ['--serve', '--epoch', String(started), '--approvers', String(APPROVERS)],
    {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    },
  )
  const reply = (type) =>
    new Promise((resolveReply, reject) => {
      const onMessage = (m) => {
        if (m.type !== type) return
        child.off('message', onMessage)
        child.off('exit', onExit)
        resolveReply(m)
      }
      const onExit = (code) => reject(new Error(`the IdP process exited (${code})`))
      child.on('message', onMessage)
      child.once('exit', onExit)
    })
  const ready = await reply('ready')
  const { server } = ready
  const client = { clientId: ready.clientId }
  const SCOPES = ['openid', 'offline_access', ready.apiScope]
  const lag = monitorEventLoopDelay({ resolution: 20 })
  // What the 20 ms sampling timer was late by.
  const lagMs = (ns) => Math.max(0, ns / 1e6 - 20).toFixed(0)
  const keyFile = join(work, 'key')
  writeFileSync(keyFile, 'k'.repeat(48), { mode: 0o600 })

  // ---- phase 1: N device-code sign-ins started within one second
  log(`${N} agents; phase 1: device-code sign-ins`)
  const flows = await Promise.all(
    Array.from({ length: N }, async (_, i) => {
      await sleep(Math.floor((i / N) * 900))
      const at = Date.now()
      const flow = await lib.startDeviceAuthorization(server, client, SCOPES)
      return { flow, at }
    }),
  )
  const startSpread = Math.max(...flows.map((f) => f.at)) - Math.min(...flows.map((f) => f.at))
  const signins = flows.map(({ flow }) => lib.pollDeviceAuthorization(server, client, flow))
  child.send({ type: 'approve', userCodes: flows.map(({ flow }) => flow.userCode) })
  await reply('approved')
  const tokenSets = await Promise.all(signins)
  child.send({ type: 'report' })
  const signinReport = await reply('report')
  const slowDowns = signinReport.slowDowns
  const pollsTotal = signinReport.polls
  log(`signed in: ${tokenSets.length}, polls ${pollsTotal}, slow_down ${slowDowns}, at ${second()} s`)

  // ---- the agents: store, memory cache, renewer, spool, uploader
  const stop = new AbortController()
  // Every agent's loop and sleeps listen to this one signal.
  setMaxListeners(0, stop.signal)
  const fleet = []
  for (let i = 0; i < N; i++) {
    const stateDir = join(work, `agent-${i}`)
    const store = await lib.openTokenStore({ stateDir, env: { EDGETOKEN_KEY_FILE: keyFile } })
    await lib.saveSignIn(store, {
      authority: server.issuer,
      clientId: client.clientId,
      account: { id: 'device-user', issuer: server.issuer },
      tokenSet: tokenSets[i],
      requestedScopes: SCOPES,
    })
    // The daemon's own wiring (agent/daemon/daemon-tokens.js): one acquisition path for the
    // renewer and the uploader; a refresh the uploader causes moves the renewer's schedule, and
    // while the renewer retries a failed renewal the uploader sends no refresh of its own.
    const daemonTokens = createDaemonTokens({
      store,
      identity: { authority: server.issuer, clientId: client.clientId, scopes: SCOPES },
      acquireTokenSilent: lib.acquireTokenSilent,
      refreshFor: (_authority, _clientId, _store, signal) => (rt, scopes, context) =>
        lib.refreshTokenGrant(server, client, rt, scopes, {
          signal,
          originalIdTokenClaims: context?.idTokenClaims,
        }),
      signal: stop.signal,
      output: quiet,
      onSigninRequired() {},
    })
    const renewer = daemonTokens.renewer
    const spool = await lib.openSpool(stateDir)
    const uploader = new lib.Uploader({
      spool,
      endpoint: ready.ingest,
      deviceId: `device-${i}`,
      getAccessToken: ({ forceRefresh, claims }) => daemonTokens.getToken(forceRefresh, undefined, claims),
    })
    fleet.push({ spool, renewer, uploader })
  }
  const errors = new Map()
  for (const [i, a] of fleet.entries()) {
    a.renewer.start()
    a.loop = (async () => {
      while (!stop.signal.aborted) {
        try {
          await a.uploader.run({ signal: stop.signal })
        } catch (err) {
          const code = err?.code ?? 'error'
          errors.set(code, (errors.get(code) ?? 0) + 1)
          await sleep(2000, undefined, { signal: stop.signal }).catch(() => {})
        }
      }
    })()
    // One reading every RECORD_S seconds, each agent at its own phase.
    const phase = (i / N) * RECORD_S * 1000
    a.readings = setTimeout(() => {
      a.readings = setInterval(() => {
        a.spool.append([{ t: Date.now(), v: Math.random() }]).catch(() => {})
      }, RECORD_S * 1000)
    }, phase)
  }
  const mark = (name) => ({ name, at: second() })
  const marks = [mark('warm-up')]
  log(`agents running; warm-up ${WARMUP} s`)
  lag.enable()
  await sleep(WARMUP * 1000)
  marks.push(mark('steady'))
  log(`steady ${STEADY} s`)
  await sleep(STEADY * 1000)
  marks.push(mark('outage'))
  log(`outage ${OUTAGE} s (503, Retry-After: 10 for the first half)`)
  child.send({ type: 'outage', on: true, retryAfter: 10 })
  await sleep((OUTAGE * 1000) / 2)
  child.send({ type: 'outage', on: true })
  await sleep((OUTAGE * 1000) / 2)
  child.send({ type: 'outage', on: false })
  marks.push(mark('recovery'))
  log(`recovery ${RECOVERY} s`)
  await sleep(RECOVERY * 1000)
  marks.push(mark('end'))

  lag.disable()
  const signinRequired = fleet.filter((a) => a.renewer.state === 'signin-required').length
  stop.abort()
  for (const a of fleet) {
    a.renewer.stop()
    clearTimeout(a.readings)
    clearInterval(a.readings)
  }
  await Promise.allSettled(fleet.map((a) => a.loop))
  child.send({ type: 'report' })
  const report = await reply('report')

  // ---- report
  const series = (kind, from, to) => {
    const m = new Map(report.counts[kind] ?? [])
    return Array.from({ length: Math.max(0, to - from) }, (_, k) => m.get(from + k) ?? 0)
  }
  const at = (name) => marks.find((m) => m.name === name).at
  const peakMean = (xs) => {
    const mean = xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)
    const peak = Math.max(0, ...xs)
    return { peak, mean, ratio: mean > 0 ? peak / mean : 0 }
  }
  /** A text histogram: how many seconds saw each rate. */
  function histogram(xs, width = 40) {
    const peak = Math.max(1, ...xs)
    const step = Math.max(1, Math.ceil((peak + 1) / 12))
    const buckets = new Map()
    for (const x of xs) {
      const b = Math.floor(x / step) * step
      buckets.set(b, (buckets.get(b) ?? 0) + 1)
    }
    const most = Math.max(...buckets.values())
    return [...buckets.keys()]
      .sort((a, b) => a - b)
      .map((b) => {
        const n = buckets.get(b)
        const label = step === 1 ? `${b}` : `${b}-${b + step - 1}`
        return `  ${label.padStart(9)}/s | ${'#'.repeat(Math.max(1, Math.round((n / most) * width)))} ${n} s`
      })
      .join('\n')
  }
  const lines = []
  const out = (s = '') => lines.push(s)
  const judge = (ok) => (ok ? 'met' : 'NOT met')
  out(
    `Fleet: ${N} agents in one process; ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, load ${loadavg()
      .map((x) => x.toFixed(1))
      .join(
        '/',
      )}; Node ${process.version}; agents' process: peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB, event-loop lag p50 ${lagMs(lag.percentile(50))} ms, p99 ${lagMs(lag.percentile(99))} ms, max ${lagMs(lag.max)} ms; IdP+API process peak RSS ${report.rssMiB.toFixed(0)} MiB`,
  )
  out(
    `Sign-in: ${N} device flows started within ${(startSpread / 1000).toFixed(2)} s, ${pollsTotal} polls, ${slowDowns} slow_down (goal 0: ${judge(slowDowns === 0)})`,
  )
  for (const [kind, label] of [
    ['token', 'token requests (refresh grants)'],
    ['upload', 'uploads'],
  ]) {
    const steady = series(kind, at('steady'), at('outage'))
    const s = peakMean(steady)
    out()
    out(
      `Steady ${STEADY} s, ${label}: mean ${s.mean.toFixed(1)}/s, peak ${s.peak}/s, peak/mean ${s.ratio.toFixed(2)} (goal <= 2: ${judge(s.ratio <= 2)})`,
    )
    out(histogram(steady))
    if (values.series) out(`  per second: ${steady.join(' ')}`)
    const outage = series(kind, at('outage'), at('recovery'))
    const o = peakMean(outage)
    if (values.series) out(`  outage per second: ${outage.join(' ')}`)
    out(
      `Outage ${OUTAGE} s, ${label} attempts: mean ${o.mean.toFixed(1)}/s, peak ${o.peak}/s (bounded: <= ${N}/s, one per agent: ${judge(o.peak <= N)})`,
    )
    const rec = series(kind, at('recovery'), at('recovery') + Math.min(10, RECOVERY))
    const r = peakMean(rec)
    out(
      `First ${Math.min(10, RECOVERY)} s after recovery, ${label}: ${rec.join(' ')} per second; peak/mean ${r.ratio.toFixed(2)} (goal <= 2: ${judge(r.ratio <= 2)})`,
    )
  }
  out()
  out(
    `API batches accepted: ${report.batches}; agents whose sign-in was lost: ${signinRequired}; upload loop errors: ${errors.size === 0 ? 'none' : JSON.stringify(Object.fromEntries(errors))}`,
  )
  console.log(lines.join('\n'))
  child.send({ type: 'close' })
  await new Promise((r) => child.once('exit', r))
  process.exit(0)
}
