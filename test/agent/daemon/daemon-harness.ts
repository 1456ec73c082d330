/**
 * The harness of the daemon tests: `edgetoken` as a child process (NDJSON events and stderr
 * collected), the real test IdP, the reference API and mosquitto, and the steps the tests share
 * (a device's config, `login` approved by the headless user, retained messages, a pair request,
 * RFC 7662 introspection). Split out so the pair tests can run in a file of their own (each file
 * has its own time budget).
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before } from 'node:test'
import { fileURLToPath } from 'node:url'
import mqtt from 'mqtt'
import { startTestApi, type TestApi } from '../../support/api.js'
import { approveDevice } from '../../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../../support/idp.js'
import { clientOptions, startBroker, type TestBroker } from '../../support/mosquitto.js'
import { startRecorder } from '../../support/mqtt-recorder.js'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const CLI = fileURLToPath(new URL('../../../src/cli.ts', import.meta.url))

/** A running CLI child. */
export interface Cli {
  child: ChildProcess
  events: Record<string, unknown>[]
  stderr: () => string
  waitForEvent(pred: (e: Record<string, unknown>) => boolean, what: string, timeoutMs?: number): Promise<void>
  exit: Promise<number | null>
}

/** Starts the CLI (tsx) with extra environment; stdout is parsed as NDJSON. */
export function startCli(args: string[], env: NodeJS.ProcessEnv, stdin?: string): Cli {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  })
  child.stdin?.end(stdin)
  const events: Record<string, unknown>[] = []
  let buffered = ''
  let err = ''
  child.stdout?.on('data', (d) => {
    buffered += d
    let nl = buffered.indexOf('\n')
    while (nl >= 0) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      if (line.trim()) events.push(JSON.parse(line) as Record<string, unknown>)
      nl = buffered.indexOf('\n')
    }
  })
  child.stderr?.on('data', (d) => {
    err += d
  })
  const exit = once(child, 'exit').then(([code]) => code as number | null)
  return {
    child,
    events,
    stderr: () => err,
    exit,
    async waitForEvent(pred, what, timeoutMs = 30_000) {
      await waitUntil(
        () => events.some(pred),
        what,
        timeoutMs,
        () => `stderr:\n${err}`,
      )
    },
  }
}

/** Polls `predicate` every 50 ms; throws naming `what` (and `context()`) after `timeoutMs`. */
export async function waitUntil(
  predicate: () => boolean,
  what: string,
  timeoutMs = 30_000,
  context: () => string = () => '',
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${context()}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Options of {@link useDaemonFixture}. */
export interface DaemonFixtureOptions {
  /** Start the reference API and configure uploads to it. Default true. */
  api?: boolean
}

/** The servers and shared steps of a daemon test file; see {@link useDaemonFixture}. */
export interface DaemonFixture {
  readonly idp: TestIdp
  readonly api: TestApi
  readonly broker: TestBroker
  readonly dir: string
  /** Children killed (SIGKILL) after the file, if still running. */
  readonly children: ChildProcess[]
  setup(name: string, deviceId: string): Promise<NodeJS.ProcessEnv>
  login(env: NodeJS.ProcessEnv, options?: { login?: string }): Promise<void>
  retainedOn(topic: string): Promise<string[]>
  waitForRetained(topic: string, pred: (payloads: string[]) => boolean, what: string): Promise<string[]>
  sendPair(deviceId: string): Promise<void>
  markSigninRequired(env: NodeJS.ProcessEnv): Promise<void>
  statusOf(env: NodeJS.ProcessEnv): Promise<Record<string, unknown>>
  isActive(refreshToken: string): Promise<boolean>
  assertNoSecrets(cli: Cli): void
}

/**
 * Registers `before`/`after` hooks (call it inside `describe`) that start the test IdP (12 s
 * access tokens, so renewals happen within a test; interval 1 s), mosquitto and, unless turned
 * off, the reference API; and returns the shared steps.
 *
 * @param options - whether to start the API.
 * @returns the fixture; its servers are set once the `before` hook ran.
 */
export function useDaemonFixture(options: DaemonFixtureOptions = {}): DaemonFixture {
  const withApi = options.api ?? true
  let idp: TestIdp
  let api: TestApi
  let broker: TestBroker
  let dir: string
  const children: ChildProcess[] = []

  before(async () => {
    idp = await startTestIdp({ accessTokenTtlSeconds: 12, interval: 1 })
    if (withApi) api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
    broker = await startBroker()
    dir = await mkdtemp(join(tmpdir(), 'edgetoken-daemon-'))
    await writeFile(join(dir, 'key'), randomBytes(32), { mode: 0o600 })
  })
  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
    await broker?.close()
    await api?.close()
    await idp?.close()
    await rm(dir, { recursive: true, force: true })
  })

  async function setup(name: string, deviceId: string): Promise<NodeJS.ProcessEnv> {
    const stateDir = join(dir, name)
    const configFile = join(dir, `${name}.json`)
    await writeFile(
      configFile,
      JSON.stringify({
        authority: idp.issuer,
        clientId: idp.publicClientId,
        scopes: ['openid', 'offline_access', idp.apiScope],
        deviceId,
        stateDir,
        keyFile: join(dir, 'key'),
        mqtt: { url: broker.url, allowPair: true },
        ...(withApi ? { telemetry: { endpoint: api.url, lingerMs: 100 } } : {}),
      }),
    )
    return { EDGETOKEN_CONFIG: configFile, EDGETOKEN_STATE_DIR: '', NOTIFY_SOCKET: '' }
  }

  async function login(env: NodeJS.ProcessEnv, opts: { login?: string } = {}): Promise<void> {
    const cli = startCli(['login', '--json', '--display', 'none'], env)
    children.push(cli.child)
    await cli.waitForEvent((e) => e.event === 'device_code', 'device_code')
    const code = cli.events.find((e) => e.event === 'device_code')?.user_code
    await approveDevice(idp.issuer, String(code), opts)
    assert.equal(await cli.exit, 0, cli.stderr())
  }

  /** The payloads a display that subscribes now finds retained on a topic. */
  async function retainedOn(topic: string): Promise<string[]> {
    const rec = await startRecorder(broker, topic)
    try {
      await rec.settle()
      return rec.messages.filter((m) => m.retain).map((m) => m.payload.toString())
    } finally {
      await rec.close()
    }
  }

  async function waitForRetained(topic: string, pred: (payloads: string[]) => boolean, what: string) {
    const deadline = Date.now() + 15_000
    for (;;) {
      const retained = await retainedOn(topic)
      if (pred(retained)) return retained
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${what}; retained: ${JSON.stringify(retained)}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }

  /** The companion display asks for a sign-in (a valid, fresh pair request). */
  async function sendPair(deviceId: string): Promise<void> {
    const display = await mqtt.connectAsync(broker.url, clientOptions(broker))
    await display.publishAsync(
      `edgetoken/${deviceId}/pair`,
      JSON.stringify({
        request: 'signin',
        nonce: randomBytes(12).toString('base64url'),
        at: new Date().toISOString(),
      }),
      { qos: 1 },
    )
    await display.endAsync()
  }

  /** Marks the stored account as needing sign-in, keeping its (still valid) refresh token. */
  async function markSigninRequired(env: NodeJS.ProcessEnv): Promise<void> {
    const { openTokenStore } = await import('../../../src/store/token-store.js')
    const config = JSON.parse(await readFile(String(env.EDGETOKEN_CONFIG), 'utf8')) as { stateDir: string }
    const store = await openTokenStore({ stateDir: config.stateDir, env: {}, keyFile: join(dir, 'key') })
    await store.withLock(async () => {
      const doc = await store.read()
      for (const entry of Object.values(doc.accounts)) entry.needsSignIn = true
      await store.write(doc)
    })
  }

  /** The account `edgetoken status` reports. */
  async function statusOf(env: NodeJS.ProcessEnv): Promise<Record<string, unknown>> {
    const cli = startCli(['status', '--json'], env)
    children.push(cli.child)
    await cli.exit
    return cli.events[0] ?? {}
  }

  /** RFC 7662 introspection at the test IdP: is this refresh token still good? */
  async function isActive(refreshToken: string): Promise<boolean> {
    const response = await fetch(new URL('/token/introspection', idp.issuer), {
      method: 'POST',
      body: new URLSearchParams({
        client_id: idp.publicClientId,
        token: refreshToken,
        token_type_hint: 'refresh_token',
      }),
    })
    return ((await response.json()) as { active?: unknown }).active === true
  }

  function assertNoSecrets(cli: Cli): void {
    const out = JSON.stringify(cli.events) + cli.stderr()
    for (const secret of [
      ...idp.issued.accessTokens,
      ...idp.issued.refreshTokens,
      ...idp.issued.deviceCodes,
    ]) {
      assert.ok(!out.includes(secret), 'no token or device code in the daemon output')
    }
  }

  return {
    get idp() {
      return idp
    },
    get api() {
      return api
    },
    get broker() {
      return broker
    },
    get dir() {
      return dir
    },
    children,
    setup,
    login,
    retainedOn,
    waitForRetained,
    sendPair,
    markSigninRequired,
    statusOf,
    isActive,
    assertNoSecrets,
  }
}
