#!/usr/bin/env node
// Benchmark (not a test) of issue 18: a cache hit per call of `acquireTokenSilent({ account, scopes })`
// through PublicClient with MemoryTokenCache and with RedisTokenCache (a local redis-server it
// starts), against @azure/msal-node's in-memory `acquireTokenSilent` on the same data: one account,
// one access token valid for an hour, a refresh token. No IdP: a hit makes no request (msal is
// given its authority and cloud discovery metadata, and a cache loaded with `deserialize`).
// Rounds are interleaved; each cell is the median of the rounds' per-call means, [min-max].
//
// Usage: npm run bench -- cache   (builds first)   |   node test/bench/bench-cache.mjs [--calls 2000]
//   [--rounds 7] [--src]   (--src: the TypeScript sources through tsx, no build needed)
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'

const root = new URL('../..', import.meta.url).pathname
const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '7' },
    src: { type: 'boolean', default: false },
  },
})
const CALLS = Math.max(10, Number(values.calls) || 2000)
const ROUNDS = Math.max(3, Number(values.rounds) || 7)

let lib
if (values.src) {
  const { register } = await import('tsx/esm/api')
  register()
  lib = await import(pathToFileURL(join(root, 'src', 'index.ts')).href)
} else {
  const entry = join(root, 'dist', 'lib', 'index.js')
  if (!existsSync(entry)) {
    console.error("bench-cache: dist/lib is missing; run 'npm run build' first (or pass --src)")
    process.exit(2)
  }
  lib = await import(pathToFileURL(entry).href)
}
const require = createRequire(join(root, 'package.json'))
const msal = await import(pathToFileURL(require.resolve('@azure/msal-node')).href)

// ---- redis-server on a free loopback port, no persistence
const work = mkdtempSync(join(tmpdir(), 'edgetoken-bench-cache-'))
const port = await new Promise((resolve, reject) => {
  import('node:net').then(({ createServer }) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port
      s.close(() => resolve(p))
    })
  })
})
const redisArgs = [
  '--port',
  String(port),
  '--bind',
  '127.0.0.1',
  '--save',
  '',
  '--appendonly',
  'no',
  '--dir',
  work,
]
const redisServer = spawn('redis-server', redisArgs, { stdio: ['ignore', 'pipe', 'inherit'] })
process.on('exit', () => {
  redisServer.kill('SIGKILL')
  rmSync(work, { recursive: true, force: true })
})
await new Promise((resolve, reject) => {
  let log = ''
  const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${log}`)), 10_000)
  redisServer.stdout.setEncoding('utf8')
  redisServer.stdout.on('data', (chunk) => {
    log += chunk
    if (log.includes('Ready to accept connections')) {
      clearTimeout(timer)
      resolve()
    }
  })
  redisServer.once('error', reject)
})

// ---- the same data for every library
const tenant = '72f988bf-86f1-41af-91ab-2d7cd011db47'
const uid = '00000000-0000-0000-66f3-3332eca7ea81'
const authority = `https://login.microsoftonline.com/${tenant}`
const clientId = 'b6e2a6a6-0f5b-4a3e-9d3e-bench0000001'
const scope = 'api://bench/telemetry.write'
const homeAccountId = `${uid}.${tenant}`
const username = 'bench@example.test'
const now = Date.now()
const expiresAt = now + 3_600_000
const accessToken = `at-${randomBytes(24).toString('base64url')}`
const refreshToken = `rt-${randomBytes(24).toString('base64url')}`
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')
const idToken = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({
  aud: clientId,
  iss: `https://login.microsoftonline.com/${tenant}/v2.0`,
  iat: Math.floor(now / 1000),
  exp: Math.floor(expiresAt / 1000),
  oid: uid,
  tid: tenant,
  sub: 'bench-subject',
  preferred_username: username,
  name: 'Bench User',
})}.`

/** The partition edgetoken's clients keep for this account (see src/store/partitions/partition.ts). */
const partition = {
  v: 1,
  account: {
    id: homeAccountId,
    issuer: `https://login.microsoftonline.com/${tenant}/v2.0`,
    username,
    tenant,
  },
  refreshToken,
  refreshTokenExpiresAt: now + 90 * 86_400_000,
  scopes: [scope],
  accessTokens: [{ key: scope, scopes: [scope], token: accessToken, expiresAt, obtainedAt: now }],
  updatedAt: now,
}
const key = lib.partitionKey(lib.appKey(authority, clientId), 'account', homeAccountId)

const memoryCache = new lib.MemoryTokenCache()
await memoryCache.put(key, partition)
const redisCache = new lib.RedisTokenCache({ url: `redis://127.0.0.1:${port}`, key: randomBytes(32) })
await redisCache.put(key, partition, { expiresAt: partition.refreshTokenExpiresAt })
const memoryClient = new lib.PublicClient({ authority, clientId, cache: memoryCache })
const redisClient = new lib.PublicClient({ authority, clientId, cache: redisCache })

// msal-node: its serialized cache format (msal-common CacheHelpers keys), no network.
const env = 'login.microsoftonline.com'
const secs = (ms) => String(Math.floor(ms / 1000))
const msalCache = {
  Account: {
    [`${homeAccountId}-${env}-${tenant}`]: {
      home_account_id: homeAccountId,
      environment: env,
      realm: tenant,
      local_account_id: uid,
      username,
      authority_type: 'MSSTS',
      name: 'Bench User',
      client_info: b64({ uid, utid: tenant }),
    },
  },
  IdToken: {
    [`${homeAccountId}-${env}-idtoken-${clientId}-${tenant}---`]: {
      home_account_id: homeAccountId,
      environment: env,
      credential_type: 'IdToken',
      client_id: clientId,
      secret: idToken,
      realm: tenant,
    },
  },
  AccessToken: {
    [`${homeAccountId}-${env}-accesstoken-${clientId}-${tenant}-${scope}--`]: {
      home_account_id: homeAccountId,
      environment: env,
      credential_type: 'AccessToken',
      client_id: clientId,
      secret: accessToken,
      realm: tenant,
      target: scope,
      cached_at: secs(now),
      expires_on: secs(expiresAt),
      extended_expires_on: secs(expiresAt),
      token_type: 'Bearer',
    },
  },
  RefreshToken: {
    [`${homeAccountId}-${env}-refreshtoken-${clientId}----`]: {
      home_account_id: homeAccountId,
      environment: env,
      credential_type: 'RefreshToken',
      client_id: clientId,
      secret: refreshToken,
    },
  },
  AppMetadata: {},
}
const authorityMetadata = JSON.stringify({
  token_endpoint: `${authority}/oauth2/v2.0/token`,
  authorization_endpoint: `${authority}/oauth2/v2.0/authorize`,
  end_session_endpoint: `${authority}/oauth2/v2.0/logout`,
  issuer: `https://login.microsoftonline.com/${tenant}/v2.0`,
  jwks_uri: `https://login.microsoftonline.com/${tenant}/discovery/v2.0/keys`,
})
const cloudDiscoveryMetadata = JSON.stringify({
  tenant_discovery_endpoint: `${authority}/v2.0/.well-known/openid-configuration`,
  'api-version': '1.1',
  metadata: [{ preferred_network: env, preferred_cache: env, aliases: [env, 'login.windows.net'] }],
})
const msalApp = new msal.PublicClientApplication({
  auth: { clientId, authority, authorityMetadata, cloudDiscoveryMetadata },
  system: { loggerOptions: { logLevel: msal.LogLevel.Error, loggerCallback: () => {} } },
})
msalApp.getTokenCache().deserialize(JSON.stringify(msalCache))
const [msalAccount] = await msalApp.getTokenCache().getAllAccounts()
if (!msalAccount) throw new Error('msal-node did not load the account')

const candidates = {
  'edgetoken MemoryTokenCache': async () => {
    const r = await memoryClient.acquireTokenSilent({ account: homeAccountId, scopes: [scope] })
    if (r.accessToken !== accessToken) throw new Error('memory: not a hit')
  },
  'edgetoken RedisTokenCache': async () => {
    const r = await redisClient.acquireTokenSilent({ account: homeAccountId, scopes: [scope] })
    if (r.accessToken !== accessToken) throw new Error('redis: not a hit')
  },
  'redis GET alone (node-redis, no decryption)': undefined,
  'msal-node in-memory': async () => {
    const r = await msalApp.acquireTokenSilent({ account: msalAccount, scopes: [scope] })
    if (r.accessToken !== accessToken) throw new Error('msal-node: not a hit')
  },
}
// The floor a Redis-backed cache cannot go under: one round trip of a GET on the same socket kind.
const { createClient } = require('redis')
const raw = createClient({ url: `redis://127.0.0.1:${port}` })
raw.on('error', () => {})
await raw.connect()
candidates['redis GET alone (node-redis, no decryption)'] = async () => {
  if ((await raw.get(`edgetoken:${key}`)) === null) throw new Error('raw: no value')
}

// ---- measure: warm-up, then interleaved rounds of CALLS sequential calls
const per = Object.fromEntries(Object.keys(candidates).map((n) => [n, []]))
for (const fn of Object.values(candidates)) for (let i = 0; i < 200; i++) await fn()
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, fn] of Object.entries(candidates)) {
    const start = process.hrtime.bigint()
    for (let i = 0; i < CALLS; i++) await fn()
    per[name].push(Number(process.hrtime.bigint() - start) / 1000 / CALLS)
  }
}
await raw.close()
await redisCache.close()

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const msalMed = median(per['msal-node in-memory'])
console.log(
  `cache hit per call, µs (median of ${ROUNDS} rounds of ${CALLS} sequential calls [min-max]); Node ${process.version}, ${cpus().length} CPUs, redis-server on loopback`,
)
console.log('| | µs per call | vs msal-node in-memory |')
console.log('|---|---|---|')
for (const [name, xs] of Object.entries(per)) {
  const med = median(xs)
  console.log(
    `| ${name} | ${med.toFixed(2)} [${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)}] | ${(med / msalMed).toFixed(2)}x |`,
  )
}
console.log(
  'All through acquireTokenSilent({ account, scopes }) but the raw GET; Redis values are AES-256-GCM sealed (a read of an unchanged value reuses the last decryption).',
)
process.exit(0)
