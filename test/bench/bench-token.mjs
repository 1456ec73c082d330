#!/usr/bin/env node
// Benchmark (not a test) of the cached `token` path: `node dist/cli.js token` with a valid cached
// token against a bare `node -e 0`, wall time over N runs and peak RSS.
// Goal on a Raspberry-Pi-class machine and here: <= 1.4x the bare node start, <= 50 MiB.
//
// Usage: npm run build && node test/bench/bench-token.mjs [--runs 100] [--cli dist/cli.js]
// It seeds a throw-away state directory with a signed-in account (no IdP needed: the cached
// path makes no request), so it measures exactly: config, key file, HKDF, read + AES-GCM decrypt.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'

const root = new URL('../..', import.meta.url).pathname
const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '100' },
    cli: { type: 'string', default: join(root, 'dist', 'cli.js') },
  },
})
const runs = Math.max(3, Number(values.runs) || 100)
const cli = resolve(values.cli)
if (!existsSync(cli)) {
  console.error(`bench-token: ${cli} is missing; run 'npm run build' first`)
  process.exit(2)
}
const dist = join(cli, '..')

const work = mkdtempSync(join(tmpdir(), 'edgetoken-bench-'))
process.on('exit', () => rmSync(work, { recursive: true, force: true }))
const stateDir = join(work, 'state')
const keyFile = join(work, 'key')
writeFileSync(keyFile, 'b'.repeat(48), { mode: 0o600 })
const authority = 'http://127.0.0.1:9'
const clientId = 'bench-client'
const env = {
  PATH: process.env.PATH,
  HOME: work,
  EDGETOKEN_AUTHORITY: authority,
  EDGETOKEN_CLIENT_ID: clientId,
  EDGETOKEN_SCOPES: 'openid offline_access api:read',
  EDGETOKEN_STATE_DIR: stateDir,
  EDGETOKEN_KEY_FILE: keyFile,
}

// Seed the store through the built library, as `login` would.
const { openTokenStore } = await import(join(dist, 'lib', 'store', 'token-store.js'))
const { saveSignIn } = await import(join(dist, 'lib', 'store', 'cache.js'))
const store = await openTokenStore({ stateDir, env })
const accessToken = `bench-access-token-${Date.now()}`
await saveSignIn(store, {
  authority,
  clientId,
  account: { id: 'bench-user', issuer: authority },
  tokenSet: {
    accessToken,
    tokenType: 'bearer',
    expiresAt: Date.now() + 3600_000,
    scopes: ['api:read'],
    refreshToken: 'bench-refresh-token',
  },
  requestedScopes: ['openid', 'offline_access', 'api:read'],
})

// The same cached answer under `grant: client_credentials` (issue 12): its account has no refresh
// token, and its private key file does not even exist, so a figure here proves it is never read.
const machineState = join(work, 'machine-state')
const machineEnv = {
  ...env,
  EDGETOKEN_STATE_DIR: machineState,
  EDGETOKEN_SCOPES: 'api://bench/.default',
  EDGETOKEN_GRANT: 'client_credentials',
  EDGETOKEN_CLIENT_CERTIFICATE_FILE: join(work, 'absent-cert.pem'),
  EDGETOKEN_CLIENT_PRIVATE_KEY_FILE: join(work, 'absent-key.pem'),
}
const machineToken = `bench-machine-token-${Date.now()}`
await saveSignIn(await openTokenStore({ stateDir: machineState, env: machineEnv }), {
  authority,
  clientId,
  account: { id: clientId, issuer: authority },
  tokenSet: {
    accessToken: machineToken,
    tokenType: 'bearer',
    expiresAt: Date.now() + 3600_000,
    scopes: ['api://bench/.default'],
  },
  requestedScopes: ['api://bench/.default'],
})

const timeBin = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined
const rssHook = join(work, 'rss.mjs')
writeFileSync(
  rssHook,
  "process.on('exit', () => process.stderr.write('\\nmaxrss_kb=' + process.resourceUsage().maxRSS + '\\n'))\n",
)

function once(args, runEnv = env) {
  const started = process.hrtime.bigint()
  const r = spawnSync(process.execPath, args, { env: runEnv, encoding: 'utf8' })
  const ms = Number(process.hrtime.bigint() - started) / 1e6
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited ${r.status}: ${r.stderr}`)
  return { ms, stdout: r.stdout }
}

function peakRssMiB(args) {
  const r = timeBin
    ? spawnSync(timeBin, ['-f', 'maxrss_kb=%M', process.execPath, ...args], { env, encoding: 'utf8' })
    : spawnSync(process.execPath, ['--import', rssHook, ...args], { env, encoding: 'utf8' })
  const kb = Number(/maxrss_kb=(\d+)/.exec(r.stderr)?.[1])
  return kb / 1024
}

const bare = ['-e', '0']
const token = [cli, 'token']
const got = once(token).stdout.trim()
if (got !== accessToken) throw new Error('bench-token: the CLI did not print the cached token')
for (let i = 0; i < 2; i++) {
  once(bare)
  once(token)
}
let machine = false
try {
  machine = once(token, machineEnv).stdout.trim() === machineToken
} catch {
  // An older build (no machine grants) has no cached answer here.
}
const times = { bare: [], token: [], machine: [] }
for (let i = 0; i < runs; i++) {
  // Interleaved, so drift in machine load hits both alike.
  times.bare.push(once(bare).ms)
  times.token.push(once(token).ms)
  if (machine) times.machine.push(once(token, machineEnv).ms)
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}
const p90 = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)]
const rss = {
  bare: Math.max(peakRssMiB(bare), peakRssMiB(bare)),
  token: Math.max(peakRssMiB(token), peakRssMiB(token)),
}
const ratio = median(times.token) / median(times.bare)

console.log(`edgetoken token (cached) vs node -e 0, ${runs} runs each, node ${process.version}`)
console.log(
  `  node -e 0     median ${median(times.bare).toFixed(1)} ms  p90 ${p90(times.bare).toFixed(1)} ms  peak RSS ${rss.bare.toFixed(1)} MiB`,
)
console.log(
  `  token         median ${median(times.token).toFixed(1)} ms  p90 ${p90(times.token).toFixed(1)} ms  peak RSS ${rss.token.toFixed(1)} MiB`,
)
console.log(
  machine
    ? `  token (client_credentials) median ${median(times.machine).toFixed(1)} ms  p90 ${p90(times.machine).toFixed(1)} ms  ratio ${(median(times.machine) / median(times.bare)).toFixed(2)}x`
    : '  token (client_credentials): skipped (the build predates machine grants: npm run build)',
)
console.log(
  `  ratio ${ratio.toFixed(2)}x (goal <= 1.4x: ${ratio <= 1.4 ? 'met' : 'MISSED'}), peak RSS goal <= 50 MiB: ${rss.token <= 50 ? 'met' : 'MISSED'}`,
)
console.log(`  (peak RSS via ${timeBin ? '/usr/bin/time' : 'process.resourceUsage() at exit'})`)
