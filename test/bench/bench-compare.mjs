#!/usr/bin/env node
// Benchmark (not a test) of issue 17: edgetoken side by side with what users would pick instead,
// @azure/msal-node and openid-client (dev dependencies, used only here), against one local IdP,
// every ratio measured in the same run: interleaved rounds, medians with [min-max].
// Prints one table and writes it to test/bench/RESULTS.md with the machine and Node version.
//
// Usage: npm run build && node test/bench/bench-compare.mjs [--runs 20] [--rounds 7] [--poll-seconds 12]
//   [--no-write]   (npm run bench -- compare)
//
// The IdP is oidc-provider (test/support/idp.ts) on http://127.0.0.1. msal-node needs https, so
// every library talks to it through one https front on 127.0.0.1 (node:https, a throw-away CA from
// test/support/tls.ts, trusted through NODE_EXTRA_CA_CERTS): same TLS and hop for all. The front
// also gives msal-node the two things it assumes of Entra ID: `/devicecode` (mapped to
// oidc-provider's `/device/auth`), `grant_type=device_code` (mapped to RFC 8628's URN) and
// `/v2.0/.well-known/openid-configuration` (mapped to the root's).
// How each library is configured is printed under the table.
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { Agent as HttpAgent, request as httpRequest } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { createRequire } from 'node:module'
import { cpus, loadavg, tmpdir, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'

const root = new URL('../..', import.meta.url).pathname
const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '7' },
    'poll-seconds': { type: 'string', default: '12' },
    'no-write': { type: 'boolean', default: false },
    'ca-dir': { type: 'string' },
  },
})
const RUNS = Math.max(3, Number(values.runs) || 20)
const ROUNDS = Math.max(3, Number(values.rounds) || 7)
const POLL_SECONDS = Math.max(1, Number(values['poll-seconds']) || 12)
const cli = join(root, 'dist', 'cli.js')
const require = createRequire(join(root, 'package.json'))
const msalUrl = pathToFileURL(require.resolve('@azure/msal-node')).href
const oidcUrl = pathToFileURL(require.resolve('openid-client')).href
// The package entry, as `import 'edgetoken'` resolves it (package.json "exports": the code-split bundle).
const libUrl = import.meta.resolve('edgetoken')

// ---- The CA first: this process (openid-client's fetch, undici, msal's https) must trust it, and
// NODE_EXTRA_CA_CERTS is read only at start-up, so the run restarts itself with it once.
if (values['ca-dir'] === undefined) {
  const { register } = await import('tsx/esm/api')
  register()
  const { createTestPki } = await import('../support/tls.ts')
  const pki = await createTestPki()
  const r = spawnSync(
    process.execPath,
    [new URL(import.meta.url).pathname, ...process.argv.slice(2), '--ca-dir', pki.dir],
    { stdio: 'inherit', env: { ...process.env, NODE_EXTRA_CA_CERTS: pki.caFile } },
  )
  await pki.close()
  process.exit(r.status ?? 1)
}
const caDir = values['ca-dir']
const caFile = join(caDir, 'ca.crt')

const { register } = await import('tsx/esm/api')
register()
const { silenceOidcProviderNotices } = await import('../support/quiet.ts')
silenceOidcProviderNotices()
const { startTestIdp } = await import('../support/idp.ts')
const { approveDevice } = await import('../support/headless-user.ts')
const lib = await import(libUrl)
const msal = await import(msalUrl)
const oc = await import(oidcUrl)
const undici = await import('undici')

const work = mkdtempSync(join(tmpdir(), 'edgetoken-compare-'))
process.on('exit', () => rmSync(work, { recursive: true, force: true }))

// ---- statistics
const sorted = (xs) => [...xs].sort((a, b) => a - b)
const median = (xs) => {
  const s = sorted(xs)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
/** `{ med, min, max }` of a sample. */
const stat = (xs) => ({ med: median(xs), min: Math.min(...xs), max: Math.max(...xs) })
const f1 = (x) => x.toFixed(1)
const f2 = (x) => x.toFixed(2)
const signed = (x) => `${x >= 0 ? '+' : '-'}${Math.abs(x).toFixed(1)}`
const fmt = (s, unit, digits = 1) =>
  `${s.med.toFixed(digits)} ${unit} [${s.min.toFixed(digits)}-${s.max.toFixed(digits)}]`

// ---- the IdP and its https front
const CLIENTS = {
  edgetoken: 'bench-edgetoken',
  msal: 'bench-msal',
  oidc: 'bench-openid-client',
  raw: 'bench-raw',
}
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code'
const idp = await startTestIdp({
  accessTokenTtlSeconds: 3600,
  interval: 1,
  clients: Object.values(CLIENTS).map((client_id) => ({
    client_id,
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: [DEVICE_GRANT, 'refresh_token'],
    response_types: [],
    redirect_uris: [],
  })),
})
const upstream = new HttpAgent({ keepAlive: true })
/** Device-code polls per client id, seen at the front. */
const polls = new Map()
const front = createHttpsServer(
  { cert: readFileSync(join(caDir, 'server.crt')), key: readFileSync(join(caDir, 'server.key')) },
  (req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      let path = req.url ?? '/'
      let body = Buffer.concat(chunks).toString('utf8')
      // msal-node derives the device endpoint from the token endpoint (Entra ID's shape).
      if (path.startsWith('/devicecode')) path = '/device/auth'
      // …and, in a cold process with no authorityMetadata, asks for Entra ID's `/v2.0/` discovery.
      if (path.startsWith('/v2.0/')) path = path.slice('/v2.0'.length)
      const form = new URLSearchParams(body)
      if (form.get('grant_type') === 'device_code') {
        form.set('grant_type', DEVICE_GRANT)
        body = form.toString()
      }
      if (form.get('grant_type') === DEVICE_GRANT) {
        const id = form.get('client_id') ?? '?'
        polls.set(id, (polls.get(id) ?? 0) + 1)
      }
      const headers = { ...req.headers, host: new URL(idp.issuer).host }
      delete headers['content-length']
      if (body) headers['content-length'] = String(Buffer.byteLength(body))
      const up = httpRequest(
        `${idp.issuer}${path}`,
        { method: req.method, headers, agent: upstream },
        (answer) => {
          const out = []
          answer.on('data', (c) => out.push(c))
          answer.on('end', () => {
            let data = Buffer.concat(out)
            if (path.startsWith('/.well-known/')) {
              data = Buffer.from(data.toString('utf8').replaceAll(idp.issuer, frontUrl))
            }
            const h = { ...answer.headers, 'content-length': String(data.length) }
            delete h['transfer-encoding']
            res.writeHead(answer.statusCode ?? 502, h)
            res.end(data)
          })
        },
      )
      up.on('error', () => {
        res.writeHead(502)
        res.end()
      })
      up.end(body)
    })
  },
)
await new Promise((r) => front.listen(0, '127.0.0.1', r))
const frontUrl = `https://127.0.0.1:${front.address().port}`
const discovery = await (await undici.fetch(`${frontUrl}/.well-known/openid-configuration`)).json()
// msal-node always adds `openid profile offline_access`: every library asks for the same set.
const SCOPES = ['openid', 'profile', 'offline_access', idp.apiScope]
/** edgetoken's view of the IdP: its real issuer (id_token `iss`), endpoints through the front. */
const server = {
  issuer: idp.issuer,
  dialect: 'oidc',
  tokenEndpoint: discovery.token_endpoint,
  deviceAuthorizationEndpoint: discovery.device_authorization_endpoint,
  jwksUri: discovery.jwks_uri,
}

/** One device-code sign-in of `clientId` (approved before the first poll). */
async function signIn(clientId) {
  const flow = await lib.startDeviceAuthorization(server, { clientId }, SCOPES)
  await approveDevice(idp.issuer, flow.userCode)
  return lib.pollDeviceAuthorization(server, { clientId }, flow, { sleep: async () => {} })
}

// ---- cold processes: wall time, peak RSS, CPU
const stamp = `process.on('exit', () => { const u = process.resourceUsage(); process.stderr.write('\\n@@' + JSON.stringify({ rss: u.maxRSS, cpu: (u.userCPUTime + u.systemCPUTime) / 1000 }) + '\\n') })`
const stampFile = join(work, 'stamp.cjs')
writeFileSync(stampFile, stamp)
const cleanEnv = { PATH: process.env.PATH, HOME: work }
const caEnv = { ...cleanEnv, NODE_EXTRA_CA_CERTS: caFile }

/**
 * One cold process (asynchronous: the IdP and its front run in this process and must answer it).
 * Wall time from spawn to exit; peak RSS and CPU as the process saw them at exit.
 */
function cold(args, env, expect) {
  return new Promise((resolveRun, reject) => {
    const started = process.hrtime.bigint()
    const child = spawn(process.execPath, ['--require', stampFile, ...args], { env, cwd: work })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c) => {
      stdout += c
    })
    child.stderr.on('data', (c) => {
      stderr += c
    })
    child.on('error', reject)
    child.on('close', (status) => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6
      if (status !== 0) {
        reject(new Error(`node ${args.join(' ')} exited ${status}: ${stderr.slice(-400)}`))
        return
      }
      if (expect !== undefined && stdout.trim() !== expect) {
        reject(new Error(`node ${args.join(' ')} printed the wrong token`))
        return
      }
      const m = JSON.parse(/@@(.*)/.exec(stderr)[1])
      resolveRun({ ms, rssMiB: m.rss / 1024, cpuMs: m.cpu })
    })
  })
}

/** Runs each case RUNS times, interleaved; returns per case { ms, rss, cpu } stats. */
async function coldSeries(cases) {
  for (const c of cases) await cold(c.args, c.env, c.expect) // warm the page cache
  const got = Object.fromEntries(cases.map((c) => [c.name, { ms: [], rss: [], cpu: [] }]))
  for (let i = 0; i < RUNS; i++) {
    for (const c of cases) {
      const r = await cold(c.args, c.env, c.expect)
      got[c.name].ms.push(r.ms)
      got[c.name].rss.push(r.rssMiB)
      got[c.name].cpu.push(r.cpuMs)
    }
  }
  return Object.fromEntries(
    Object.entries(got).map(([k, v]) => [k, { ms: stat(v.ms), rss: stat(v.rss), cpu: stat(v.cpu) }]),
  )
}

// ---- in-process series: per-call time of fn over `calls` calls, ROUNDS rounds interleaved
async function perCall(cases, calls) {
  const got = Object.fromEntries(cases.map((c) => [c.name, []]))
  for (const c of cases) for (let i = 0; i < Math.min(calls, 50); i++) await c.fn() // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    for (const c of cases) {
      const started = process.hrtime.bigint()
      for (let i = 0; i < calls; i++) await c.fn()
      got[c.name].push(Number(process.hrtime.bigint() - started) / 1e3 / calls)
    }
  }
  return Object.fromEntries(Object.entries(got).map(([k, v]) => [k, stat(v)]))
}

const rows = []
const notes = []
const goals = []
/** One row of the goals table: the goal, what was measured, whether it is met. */
const goal = (what, ok, measured) => goals.push([what, measured, ok ? '**met**' : '**not met**'])
const loadAtStart = loadavg()
const progress = (s) => process.stderr.write(`bench-compare: ${s}\n`)

// ==== 1. import of the library
progress('import cost')
const importOf = (url) => ['--input-type=module', '-e', url ? `await import(${JSON.stringify(url)})` : '']
const imports = await coldSeries([
  { name: 'bare', args: importOf(undefined), env: cleanEnv },
  { name: 'edgetoken', args: importOf(libUrl), env: cleanEnv },
  { name: 'msal', args: importOf(msalUrl), env: cleanEnv },
  { name: 'oidc', args: importOf(oidcUrl), env: cleanEnv },
])
const plus = (k) => ({
  ms: imports[k].ms.med - imports.bare.ms.med,
  rss: imports[k].rss.med - imports.bare.rss.med,
  cpu: imports[k].cpu.med - imports.bare.cpu.med,
})
const imp = { edgetoken: plus('edgetoken'), msal: plus('msal'), oidc: plus('oidc') }
const impCell = (k) =>
  `+${f1(imp[k].ms)} ms, +${f1(imp[k].rss)} MiB (CPU +${f1(imp[k].cpu)} ms; wall ${fmt(imports[k].ms, 'ms')})`
rows.push([
  '`import` of the library (cold process, over an empty ES module)',
  impCell('edgetoken'),
  impCell('msal'),
  impCell('oidc'),
  `${fmt(imports.bare.ms, 'ms')}, ${f1(imports.bare.rss.med)} MiB`,
])
goal(
  "library import <= openid-client's",
  imp.edgetoken.ms <= imp.oidc.ms,
  `+${f1(imp.edgetoken.ms)} vs +${f1(imp.oidc.ms)} ms wall; CPU +${f1(imp.edgetoken.cpu)} vs +${f1(imp.oidc.cpu)} ms`,
)

// ==== 2. cached `token`, cold process
progress('sign-ins')
const [etTokens, etStoreTokens, rawTokens, msalTokens, msalFileTokens, ocTokens] = await Promise.all([
  signIn(CLIENTS.edgetoken),
  signIn(CLIENTS.edgetoken),
  signIn(CLIENTS.raw),
  signIn(CLIENTS.msal),
  signIn(CLIENTS.msal),
  signIn(CLIENTS.oidc),
])

progress('cached token, cold process')
const stateDir = join(work, 'state')
const keyFile = join(work, 'key')
writeFileSync(keyFile, 'b'.repeat(48), { mode: 0o600 })
const cliEnv = {
  EDGETOKEN_AUTHORITY: idp.issuer,
  EDGETOKEN_CLIENT_ID: CLIENTS.edgetoken,
  EDGETOKEN_SCOPES: SCOPES.join(' '),
  EDGETOKEN_STATE_DIR: stateDir,
  EDGETOKEN_KEY_FILE: keyFile,
}
const store = await lib.openTokenStore({ stateDir, env: { ...cleanEnv, ...cliEnv } })
await lib.saveSignIn(store, {
  authority: idp.issuer,
  clientId: CLIENTS.edgetoken,
  account: { id: 'device-user', issuer: idp.issuer },
  tokenSet: etStoreTokens,
  requestedScopes: SCOPES,
})

// msal-node: a PublicClientApplication whose cache plugin reads a JSON file, seeded through
// acquireTokenByRefreshToken with a refresh token of its own sign-in.
const msalAuthority = `${frontUrl}/`
const msalMetadata = JSON.stringify(discovery)
const msalConfig = (withMetadata, cacheFile) => ({
  auth: {
    clientId: CLIENTS.msal,
    authority: msalAuthority,
    knownAuthorities: [new URL(frontUrl).host],
    protocolMode: 'OIDC',
    ...(withMetadata ? { authorityMetadata: msalMetadata } : {}),
  },
  ...(cacheFile
    ? {
        cache: {
          cachePlugin: {
            beforeCacheAccess: async (ctx) => {
              try {
                ctx.tokenCache.deserialize(readFileSync(cacheFile, 'utf8'))
              } catch {}
            },
            afterCacheAccess: async (ctx) => {
              if (ctx.cacheHasChanged) writeFileSync(cacheFile, ctx.tokenCache.serialize())
            },
          },
        },
      }
    : {}),
})
const msalScopes = [idp.apiScope]
const msalCacheFile = join(work, 'msal-cache.json')
const seedApp = new msal.PublicClientApplication(msalConfig(true, msalCacheFile))
const seeded = await seedApp.acquireTokenByRefreshToken({
  refreshToken: msalFileTokens.refreshToken,
  scopes: msalScopes,
  forceCache: true, // msal-node's migration flag: cache what a refresh token brings
})
const msalCached = seeded.accessToken
const msalChild = join(work, 'msal-token.mjs')
writeFileSync(
  msalChild,
  `import { readFileSync, writeFileSync } from 'node:fs'
const msal = await import(${JSON.stringify(msalUrl)})
const [withMetadata, cacheFile, metadata] = [process.argv[2] === 'metadata', process.argv[3], process.argv[4]]
const app = new msal.PublicClientApplication({
  auth: { clientId: ${JSON.stringify(CLIENTS.msal)}, authority: ${JSON.stringify(msalAuthority)},
    knownAuthorities: [${JSON.stringify(new URL(frontUrl).host)}], protocolMode: 'OIDC',
    ...(withMetadata ? { authorityMetadata: readFileSync(metadata, 'utf8') } : {}) },
  cache: { cachePlugin: {
    beforeCacheAccess: async (ctx) => ctx.tokenCache.deserialize(readFileSync(cacheFile, 'utf8')),
    afterCacheAccess: async (ctx) => { if (ctx.cacheHasChanged) writeFileSync(cacheFile, ctx.tokenCache.serialize()) },
  } },
})
const [account] = await app.getTokenCache().getAllAccounts()
const r = await app.acquireTokenSilent({ account, scopes: ${JSON.stringify(msalScopes)} })
process.stdout.write(r.accessToken + '\\n')
`,
)
const metadataFile = join(work, 'metadata.json')
writeFileSync(metadataFile, msalMetadata)
const cachedToken = (await store.read()).accounts[JSON.stringify([idp.issuer, CLIENTS.edgetoken])]
  ?.accessTokens[0]?.token
const tokenRuns = (env, tag) =>
  coldSeries([
    { name: `bare${tag}`, args: ['-e', '0'], env },
    { name: `edgetoken${tag}`, args: [cli, 'token'], env: { ...env, ...cliEnv }, expect: cachedToken },
    {
      name: `msal${tag}`,
      args: [msalChild, 'metadata', msalCacheFile, metadataFile],
      env,
      expect: msalCached,
    },
    ...(tag === '+ca'
      ? [
          {
            name: `msal-discovery${tag}`,
            args: [msalChild, 'discovery', msalCacheFile],
            env,
            expect: msalCached,
          },
        ]
      : []),
  ])
const clean = await tokenRuns(cleanEnv, '')
const withCa = await tokenRuns(caEnv, '+ca')
const tokenRatio = clean.edgetoken.ms.med / clean.bare.ms.med
const cell = (s) => `${fmt(s.ms, 'ms')}, ${f1(s.rss.med)} MiB`
rows.push([
  '`token` from the cache, cold process, clean environment',
  `${cell(clean.edgetoken)} (**${f2(tokenRatio)}x**)`,
  `${cell(clean.msal)} (${f2(clean.msal.ms.med / clean.bare.ms.med)}x; authority metadata given, no request)`,
  '-',
  cell(clean.bare),
])
rows.push([
  '… every process with NODE_EXTRA_CA_CERTS',
  `${cell(withCa['edgetoken+ca'])} (${f2(withCa['edgetoken+ca'].ms.med / withCa['bare+ca'].ms.med)}x)`,
  `${cell(withCa['msal+ca'])} with metadata, ${cell(withCa['msal-discovery+ca'])} with discovery`,
  '-',
  `${cell(withCa['bare+ca'])} (${signed(withCa['bare+ca'].ms.med - clean.bare.ms.med)} ms for the CA file alone)`,
])
goal('cached `token` <= 1.25x `node -e 0`, clean environment', tokenRatio <= 1.25, `${f2(tokenRatio)}x`)

goal('cached `token` <= 45 MiB', clean.edgetoken.rss.med <= 45, `${f1(clean.edgetoken.rss.med)} MiB`)

// ==== 3. warm silent hit
progress('warm silent hits')
const silentOptions = {
  authority: idp.issuer,
  clientId: CLIENTS.edgetoken,
  scopes: SCOPES,
  refresh: () => Promise.reject(new Error('no refresh expected')),
}
const memory = new lib.TokenStoreMemo(store, silentOptions)
const msalWarm = new msal.PublicClientApplication(msalConfig(true))
await msalWarm.acquireTokenByRefreshToken({
  refreshToken: msalTokens.refreshToken,
  scopes: msalScopes,
  forceCache: true,
})
const [msalAccount] = await msalWarm.getTokenCache().getAllAccounts()
const msalWarmCached = (await msalWarm.acquireTokenSilent({ account: msalAccount, scopes: msalScopes }))
  .accessToken
const hits = await perCall(
  [
    {
      name: 'file',
      fn: async () => {
        if ((await lib.acquireTokenSilent(store, silentOptions)).accessToken !== cachedToken)
          throw new Error('miss')
      },
    },
    {
      name: 'memory',
      fn: async () => {
        if ((await memory.acquireTokenSilent({ scopes: SCOPES })).accessToken !== cachedToken)
          throw new Error('miss')
      },
    },
    {
      name: 'msal',
      fn: async () => {
        const r = await msalWarm.acquireTokenSilent({ account: msalAccount, scopes: msalScopes })
        if (r.accessToken !== msalWarmCached) throw new Error('msal missed its cache')
      },
    },
  ],
  2000,
)
rows.push([
  'warm silent hit, per call',
  `${fmt(hits.file, 'µs')} (acquireTokenSilent, file store); **${fmt(hits.memory, 'µs', 2)}** (TokenStoreMemo)`,
  `${fmt(hits.msal, 'µs')} (in-memory cache)`,
  '-',
  '-',
])
goal('exported in-memory fast path <= 5 µs a hit', hits.memory.med <= 5, `${f2(hits.memory.med)} µs`)

// ==== 4. refresh round trip, and 5. force-refresh with lock and durable save
progress('refresh round trips')
let etRefresh = etTokens.refreshToken
let rawRefresh = rawTokens.refreshToken
let ocRefresh = ocTokens.refreshToken
const rawAgent = new undici.Agent({ connect: { ca: readFileSync(caFile) } })
const ocConfig = new oc.Configuration(
  {
    issuer: idp.issuer,
    token_endpoint: discovery.token_endpoint,
    jwks_uri: discovery.jwks_uri,
    device_authorization_endpoint: discovery.device_authorization_endpoint,
  },
  CLIENTS.oidc,
  { id_token_signed_response_alg: 'ES256' },
  oc.None(),
)
const msalFileApp = new msal.PublicClientApplication(msalConfig(true, msalCacheFile))
const [msalFileAccount] = await msalFileApp.getTokenCache().getAllAccounts()
const refreshes = await perCall(
  [
    {
      name: 'raw',
      fn: async () => {
        const r = await undici.request(discovery.token_endpoint, {
          method: 'POST',
          dispatcher: rawAgent,
          headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
          body: new URLSearchParams({
            grant_type: 'refresh_token',
            refresh_token: rawRefresh,
            client_id: CLIENTS.raw,
            scope: SCOPES.join(' '),
          }).toString(),
        })
        const body = await r.body.json()
        if (r.statusCode !== 200) throw new Error(`raw refresh: ${r.statusCode} ${body.error}`)
        rawRefresh = body.refresh_token
      },
    },
    {
      name: 'edgetoken',
      fn: async () => {
        const t = await lib.refreshTokenGrant(server, { clientId: CLIENTS.edgetoken }, etRefresh, SCOPES, {
          originalIdTokenClaims: etTokens.idTokenClaims,
        })
        etRefresh = t.refreshToken
      },
    },
    {
      name: 'oidc',
      fn: async () => {
        const t = await oc.refreshTokenGrant(ocConfig, ocRefresh, { scope: SCOPES.join(' ') })
        ocRefresh = t.refresh_token
      },
    },
    {
      name: 'msal',
      fn: () => msalWarm.acquireTokenSilent({ account: msalAccount, scopes: msalScopes, forceRefresh: true }),
    },
    {
      name: 'msal-file',
      fn: () =>
        msalFileApp.acquireTokenSilent({ account: msalFileAccount, scopes: msalScopes, forceRefresh: true }),
    },
    {
      name: 'store',
      fn: () =>
        lib.acquireTokenSilent(store, {
          ...silentOptions,
          forceRefresh: true,
          refresh: (rt, scopes) =>
            lib.refreshTokenGrant(server, { clientId: CLIENTS.edgetoken }, rt, scopes, {
              originalIdTokenClaims: etStoreTokens.idTokenClaims,
            }),
        }),
    },
  ],
  20,
)
const refreshRatio = refreshes.edgetoken.med / refreshes.raw.med
const ms = (s) => ({ med: s.med / 1000, min: s.min / 1000, max: s.max / 1000 })
rows.push([
  'refresh round trip (rotating refresh token, id_token in the answer)',
  `${fmt(ms(refreshes.edgetoken), 'ms', 2)} (**${f2(refreshRatio)}x** raw; id_token claims and OIDC Core §12.2 checked, signature not again over TLS)`,
  `${fmt(ms(refreshes.msal), 'ms', 2)} (forceRefresh, in-memory cache)`,
  `${fmt(ms(refreshes.oidc), 'ms', 2)} (id_token claims checked)`,
  `raw POST ${fmt(ms(refreshes.raw), 'ms', 2)}`,
])
rows.push([
  'silent force-refresh with lock + durable save',
  `**${fmt(ms(refreshes.store), 'ms', 2)}** (file lock, disk room reserved, fsync + rename + dir fsync)`,
  `${fmt(ms(refreshes.msal), 'ms', 2)} (memory), ${fmt(ms(refreshes['msal-file']), 'ms', 2)} (file plugin: writeFileSync, no fsync, no lock)`,
  '-',
  '-',
])
goal('refresh round trip <= 1.1x a raw POST', refreshRatio <= 1.1, `${f2(refreshRatio)}x`)
goal(
  "silent force-refresh with lock and durable save <= msal-node's in-memory forceRefresh",
  refreshes.store.med <= refreshes.msal.med,
  `${f2(refreshes.store.med / 1000)} vs ${f2(refreshes.msal.med / 1000)} ms`,
)

// ==== 6. device-code polls with no `interval` in the answer
progress(`device-code polling, ${POLL_SECONDS} s, no interval sent`)
idp.setInterval(null)
polls.clear()
const stopAt = AbortSignal.timeout(POLL_SECONDS * 1000)
const pollers = [
  (async () => {
    const flow = await lib.startDeviceAuthorization(server, { clientId: CLIENTS.edgetoken }, SCOPES)
    await lib.pollDeviceAuthorization(server, { clientId: CLIENTS.edgetoken }, flow, { signal: stopAt })
  })(),
  (async () => {
    const response = await oc.initiateDeviceAuthorization(ocConfig, { scope: SCOPES.join(' ') })
    await oc.pollDeviceAuthorizationGrant(ocConfig, response, undefined, { signal: stopAt })
  })(),
  (async () => {
    const app = new msal.PublicClientApplication(msalConfig(true))
    const request = { scopes: msalScopes, deviceCodeCallback: () => {}, timeout: POLL_SECONDS }
    stopAt.addEventListener('abort', () => {
      request.cancel = true
    })
    await app.acquireTokenByDeviceCode(request)
  })(),
]
const pollStarted = Date.now()
await Promise.allSettled(pollers)
progress(`polling stopped after ${((Date.now() - pollStarted) / 1000).toFixed(1)} s`)
idp.setInterval(1)
const pollsOf = (k) => polls.get(CLIENTS[k]) ?? 0
const rfcPolls = Math.floor(POLL_SECONDS / 5)
rows.push([
  `device-code polls in ${POLL_SECONDS} s, no \`interval\` sent`,
  String(pollsOf('edgetoken')),
  String(pollsOf('msal')),
  String(pollsOf('oidc')),
  `RFC 8628 §3.5 (5 s default): ${rfcPolls}`,
])

// ---- report
const loads = (l) => l.map((x) => x.toFixed(1)).join(' / ')
const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, load average ${loads(loadAtStart)} at the start, ${loads(loadavg())} at the end`
const header = ['figure', 'edgetoken', 'msal-node', 'openid-client', '`node -e 0` / raw']
const table = [header, header.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n')
const versions = {
  msal: require('@azure/msal-node/package.json').version,
  oidc: require('openid-client/package.json').version,
}
notes.push(
  `edgetoken: the built \`dist/\` (the package entry, \`dist/bundle\`); the CLI with a seeded encrypted store; the library's \`refreshTokenGrant\` given the sign-in's ID token claims (\`originalIdTokenClaims\`: a refreshed id_token is held to them, OpenID Connect Core §12.2, and over https not signature-checked again, §3.1.3.7 item 6), \`acquireTokenSilent\` (file store, the same refresh) and \`TokenStoreMemo\`, the authorization server given as an object (no discovery).`,
  `@azure/msal-node ${versions.msal}: \`PublicClientApplication\` with \`authority: '${msalAuthority}'\`, \`knownAuthorities: ['${new URL(frontUrl).host}']\`, \`protocolMode: 'OIDC'\`, \`authorityMetadata\` (the discovery document) unless "with discovery"; signed in through \`acquireTokenByRefreshToken\`; the cold process reads its cache through a cache plugin (JSON file).`,
  `openid-client ${versions.oidc}: \`new Configuration(metadata, clientId, { id_token_signed_response_alg: 'ES256' }, None())\`, \`refreshTokenGrant\`, \`initiateDeviceAuthorization\` + \`pollDeviceAuthorizationGrant\`.`,
  'raw: undici `request` POST of the same refresh grant with a keep-alive agent.',
  `The IdP: oidc-provider (test/support/idp.ts), rotating refresh tokens, ES256 JWT access tokens, reached by every library through one https front on 127.0.0.1 (TLS + one loopback hop each way).`,
  `Cold processes: ${RUNS} interleaved runs each, wall time from spawn to exit, peak RSS and CPU from process.resourceUsage(). In-process figures: ${ROUNDS} interleaved rounds (2000 calls per round for hits, 20 for refreshes), the median round with [min-max].`,
)
const busy =
  loadavg()[0] > cpus().length
    ? ' **The load average was above the core count: other work shared the CPUs, so times are inflated and noisy; re-run on a quiet machine.**'
    : ''
const text = [
  `Machine: ${machine}; Node ${process.version}, ${process.platform}/${process.arch}. Measured ${new Date().toISOString().slice(0, 16)}Z.${busy}`,
  '',
  table,
  '',
  'Goals (issue 17):',
  '',
  ...[['goal', 'measured', 'met?'], ['---', '---', '---'], ...goals].map((r) => `| ${r.join(' | ')} |`),
  '',
  'How each was configured:',
  ...notes.map((n) => `- ${n}`),
].join('\n')
console.log(text)
if (!values['no-write']) {
  const out = join(root, 'test', 'bench', 'RESULTS.md')
  writeFileSync(
    out,
    `# Benchmark results (generated by \`npm run bench -- compare\`)\n\nDo not edit: re-run the benchmark on a quiet machine instead.\n\n${text}\n`,
  )
  progress(`written to ${resolve(out)}`)
}
rawAgent.close()
upstream.destroy()
front.close()
front.closeAllConnections()
await idp.close()
process.exit(0)
