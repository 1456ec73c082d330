/**
 * Which packages each command loads, from a module-resolution log of the real CLI process.
 *
 * Issue 15: `conf` is imported by `config` alone. Its atomic write (`atomically`) loads
 * `when-exit`, which re-raises SIGINT/SIGTERM on the process: in `login`, `run` or the cached
 * `token` one Ctrl-C would reach our handler twice and become an immediate exit 130.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type CliResult, collect, newTestDevice, runCli, seedSignIn, spawnCli } from '../support/cli.js'
import { approveDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-imports-'))
after(() => rmSync(root, { recursive: true, force: true }))
let n = 0

const SCOPES = ['openid', 'offline_access', 'telemetry:write']
/** conf and what only conf brings: a match means its signal handling is in the process. */
const CONF = /\/node_modules\/(conf|atomically|when-exit|stubborn-fs|dot-prop|env-paths|debounce-fn)\//

const hooks = join(root, 'import-log-hooks.mjs')
const register = join(root, 'import-log-register.mjs')
writeFileSync(
  hooks,
  `import { appendFileSync } from 'node:fs'
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context)
  appendFileSync(process.env.EDGETOKEN_TEST_IMPORT_LOG, result.url + '\\n')
  return result
}
`,
)
writeFileSync(
  register,
  `import { register } from 'node:module'\nregister(${JSON.stringify(`file://${hooks}`)})\n`,
)

function logged(env: Record<string, string>): { env: Record<string, string>; read: () => string } {
  const log = join(root, `imports-${n++}.log`)
  writeFileSync(log, '')
  return { env: { ...env, EDGETOKEN_TEST_IMPORT_LOG: log }, read: () => readFileSync(log, 'utf8') }
}

/** Runs a command to its end with the import log. */
async function imports(
  args: string[],
  env: Record<string, string>,
): Promise<{ result: CliResult; log: string }> {
  const l = logged(env)
  const result = await runCli(args, { env: l.env, nodeArgs: ['--import', register], timeoutMs: 60_000 })
  return { result, log: l.read() }
}

/** Waits until a spawned CLI's stdout holds `text`. */
async function until(
  child: ReturnType<typeof spawnCli>,
  text: string | ((out: string) => Promise<boolean>),
): Promise<string> {
  let out = ''
  child.stdout?.on('data', (b: Buffer) => {
    out += b.toString()
  })
  const deadline = Date.now() + 60_000
  for (;;) {
    if (typeof text === 'string' ? out.includes(text) : await text(out)) return out
    if (child.exitCode !== null || Date.now() > deadline) assert.fail(`did not see ${String(text)}: ${out}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('issue 15: the import list of each command', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ interval: 1 })
  })
  after(() => idp?.close())

  async function signedIn(): Promise<Record<string, string>> {
    const device = newTestDevice(root, { issuer: idp.issuer, clientId: idp.publicClientId, scopes: SCOPES })
    await seedSignIn({
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      stateDir: device.stateDir,
      env: device.env,
    })
    return device.env
  }

  test('issue 15: config set loads conf (the control: the log would show it)', async () => {
    const env = newTestDevice(root, { issuer: idp.issuer }).env
    const { result, log } = await imports(['config', 'set', 'deviceId', 'gw-1'], {
      ...env,
      EDGETOKEN_CONFIG: join(root, `c${n++}.json`),
    })
    assert.equal(result.code, 0, result.stderr)
    assert.match(log, /\/node_modules\/conf\//)
    assert.match(log, /\/node_modules\/when-exit\//)
  })

  test('issue 15: the cached token, a refresh, and doctor load no conf', async () => {
    const env = await signedIn()
    const cached = await imports(['token'], env)
    assert.equal(cached.result.code, 0, cached.result.stderr)
    assert.match(cached.log, /src\/store\/envelope\.ts/, 'the import log works')
    assert.doesNotMatch(cached.log, CONF)
    const refreshed = await imports(['token', '--force-refresh'], env)
    assert.equal(refreshed.result.code, 0, refreshed.result.stderr)
    assert.match(refreshed.log, /\/node_modules\/undici\//)
    assert.doesNotMatch(refreshed.log, CONF)
    const doctor = await imports(['doctor'], env)
    assert.match(doctor.log, /src\/cli\/commands\/doctor\.ts/)
    assert.doesNotMatch(doctor.log, CONF)
  })

  test('issue 15: login, through an approved sign-in, loads no conf', async () => {
    const device = newTestDevice(root, { issuer: idp.issuer, clientId: idp.publicClientId, scopes: SCOPES })
    const l = logged(device.env)
    const child = spawnCli(['login', '--json', '--display', 'console'], {
      env: l.env,
      nodeArgs: ['--import', register],
    })
    const done = collect(child, { timeoutMs: 60_000 })
    const out = await until(child, '"event":"device_code"')
    const first = JSON.parse(out.split('\n')[0] ?? '{}') as { user_code?: string }
    await approveDevice(idp.issuer, String(first.user_code))
    const result = await done
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /"event":"signed_in"/)
    const log = l.read()
    assert.match(log, /src\/cli\/commands\/login\.ts/)
    assert.doesNotMatch(log, CONF)
  })

  test('issue 15: run, up to ready and a clean stop, loads no conf', async () => {
    const env = await signedIn()
    const l = logged(env)
    const child = spawnCli(['run', '--json'], { env: l.env, nodeArgs: ['--import', register] })
    const done = collect(child, { timeoutMs: 60_000 })
    await until(child, '"event":"ready"')
    child.kill('SIGTERM')
    const result = await done
    assert.equal(result.code, 0, result.stderr)
    const log = l.read()
    assert.match(log, /src\/agent\/daemon\/daemon\.ts/)
    assert.doesNotMatch(log, CONF)
  })
})
