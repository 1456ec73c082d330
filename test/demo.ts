/**
 * `npm run demo`: the whole system on one machine, in one command.
 *
 * Starts an OpenID Provider (oidc-provider, short-lived access tokens), an MQTT broker (aedes), the
 * reference protected API, the companion-display and sensor simulators, then signs the agent in
 * with the device flow (approve in a browser at the printed URL, or `--auto-approve`) and runs
 * `edgetoken run`. Each silent renewal gets a highlighted line; telemetry is one summary line every
 * 10 s; the display's countdown is a live line on a terminal. Ctrl-C stops everything.
 *
 * Options: see DEMO_USAGE in ./demo-console.ts (a usage error exits 2, `--help` 0).
 *
 * The last line is a summary the CI test reads:
 *   demo: summary {"signed_in":true,"renewals":N,"records_received":N,"agent_exit":0}
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createDisplayConsole } from '../firmware-bridge/simulators/console.js'
import {
  type ActivitySummary,
  createActivitySummary,
  DEMO_USAGE,
  parseDemoArgs,
  renewalLine,
} from './demo-console.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const CLI = fileURLToPath(new URL('../src/cli.ts', import.meta.url))
const DEVICE_ID = 'demo-gateway'
const AUTO_APPROVE_DELAY_MS = 3000
const STOP_TIMEOUT_MS = 15_000

const parsed = parseDemoArgs(process.argv.slice(2))
if (parsed.kind === 'help') {
  process.stdout.write(DEMO_USAGE)
  process.exit(0)
}
if (parsed.kind === 'error') {
  process.stderr.write(`demo: ${parsed.message}\n${DEMO_USAGE}`)
  process.exit(2)
}
const { autoApprove, durationSeconds, tokenTtlSeconds, sensorIntervalMs } = parsed.options

const tty = process.stdout.isTTY === true
const colour = tty && !process.env.NO_COLOR
const tint = (code: string, text: string) => (colour ? `\u001b[${code}m${text}\u001b[0m` : text)
const LABELS = {
  demo: tint('1', 'demo   '),
  idp: tint('35', 'idp    '),
  api: tint('32', 'api    '),
  agent: tint('36', 'agent  '),
  display: tint('33', 'display'),
  sensor: tint('34', 'sensor '),
} as const
/** All output goes through the display's console: on a terminal its live countdown stays last. */
const out = createDisplayConsole({
  write: (text) => process.stdout.write(text),
  tty,
  label: `${LABELS.display} | `,
})
const say = (who: keyof typeof LABELS, line: string) => out.line(`${LABELS[who]} | ${line}`)

/** Everything to stop, newest first. */
const cleanups: (() => Promise<void>)[] = []
const children = new Set<ChildProcess>()
process.on('exit', () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL')
})

function spawnCli(cliArgs: string[], env: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...cliArgs], {
    cwd: ROOT,
    env: { ...process.env, ...env, NOTIFY_SOCKET: '' },
    // Own process group: Ctrl-C reaches the demo only, which stops the agent with one SIGTERM.
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

function lines(stream: NodeJS.ReadableStream | null, onLine: (line: string) => void): void {
  let buffered = ''
  stream?.setEncoding('utf8')
  stream?.on('data', (chunk: string) => {
    buffered += chunk
    let nl = buffered.indexOf('\n')
    while (nl >= 0) {
      onLine(buffered.slice(0, nl))
      buffered = buffered.slice(nl + 1)
      nl = buffered.indexOf('\n')
    }
  })
}

function parseEvent(line: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(line)
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

async function startAedes(): Promise<{ url: string }> {
  const { Aedes } = await import('aedes')
  const broker = await Aedes.createBroker()
  const sockets = new Set<Socket>()
  const server: NetServer = createNetServer(broker.handle)
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const address = server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  cleanups.push(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await new Promise<void>((resolve) => broker.close(() => resolve()))
  })
  return { url: `mqtt://127.0.0.1:${port}` }
}

async function startApi(
  issuer: string,
  audience: string,
): Promise<{ url: string; records: () => number; watch: (summary: ActivitySummary) => void }> {
  let records = 0
  let activity: ActivitySummary | undefined
  const { createReceiver } = await import('../src/telemetry/receiver/receiver.js')
  const receiver = createReceiver({
    issuer,
    audience,
    onBatch: (batch) => {
      // Counted into one line every 10 s: a line per batch would bury the renewals.
      records += batch.records.length
      activity?.batch(batch.records.length)
    },
  })
  const server: Server = createServer(receiver.handler)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const address = server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  cleanups.push(async () => {
    receiver.close()
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  })
  return {
    url: `http://127.0.0.1:${port}/ingest`,
    records: () => records,
    watch: (summary) => {
      activity = summary
    },
  }
}

/** Resolves on Ctrl-C / SIGTERM or when the duration is over. */
function stopRequested(): { promise: Promise<string>; arm: (seconds: number | undefined) => void } {
  let resolveStop: (why: string) => void = () => {}
  const promise = new Promise<string>((resolve) => {
    resolveStop = resolve
  })
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => resolveStop(signal === 'SIGINT' ? 'Ctrl-C' : 'SIGTERM'))
  }
  return {
    promise,
    arm(seconds) {
      if (seconds !== undefined)
        setTimeout(() => resolveStop(`${seconds} s are over`), seconds * 1000).unref()
    },
  }
}

async function stopChild(child: ChildProcess | undefined): Promise<number | null> {
  if (!child) return null
  if (child.exitCode !== null) return child.exitCode
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS)
  const [code] = await exited
  clearTimeout(timer)
  return code
}

async function main(): Promise<number> {
  // Loaded only now, so that `--help` and a usage error answer at once.
  const [{ startTestIdp }, { approveDevice }, { startDisplaySimulator }, { startSensorSimulator }] =
    await Promise.all([
      import('./support/idp.js'),
      import('./support/headless-user.js'),
      import('../firmware-bridge/simulators/display.js'),
      import('../firmware-bridge/simulators/sensor.js'),
    ])
  const stop = stopRequested()
  const dir = await mkdtemp(join(tmpdir(), 'edgetoken-demo-'))
  cleanups.push(() => rm(dir, { recursive: true, force: true }))

  const idp = await startTestIdp({ accessTokenTtlSeconds: tokenTtlSeconds, interval: 2 })
  cleanups.push(() => idp.close())
  say('idp', `OpenID Provider at ${idp.issuer} (access tokens live ${tokenTtlSeconds} s)`)
  const broker = await startAedes()
  say('demo', `MQTT broker (aedes) at ${broker.url}`)
  const api = await startApi(idp.issuer, idp.audience)
  say('api', `protected telemetry API at ${api.url} (audience ${idp.audience})`)

  const display = await startDisplaySimulator({
    url: broker.url,
    deviceId: DEVICE_ID,
    // New screens in full; the countdown live on a terminal, every 30 s on a pipe.
    onRender: out.render,
  })
  cleanups.push(() => display.close())

  const keyFile = join(dir, 'edgetoken.key')
  await writeFile(keyFile, randomBytes(32), { mode: 0o600 })
  const configFile = join(dir, 'config.json')
  await writeFile(
    configFile,
    JSON.stringify(
      {
        authority: idp.issuer,
        clientId: idp.publicClientId,
        scopes: ['openid', 'offline_access', idp.apiScope],
        deviceId: DEVICE_ID,
        stateDir: join(dir, 'state'),
        keyFile,
        mqtt: { url: broker.url, protocolVersion: 4 },
        telemetry: { endpoint: api.url, lingerMs: 500 },
      },
      null,
      2,
    ),
  )
  const env = { EDGETOKEN_CONFIG: configFile, EDGETOKEN_STATE_DIR: '' }
  say('demo', `agent config: ${configFile}`)

  // 1. Sign in: the device flow, shown on the console (with a QR code) and the companion display.
  say('demo', 'signing the agent in (edgetoken login)...')
  const login = spawnCli(['login', '--json', '--display', 'console,qr,mqtt'], env)
  let signedIn = false
  const loginDone = once(login, 'exit') as Promise<[number | null]>
  lines(login.stderr, (line) => say('agent', line))
  lines(login.stdout, (line) => {
    const event = parseEvent(line)
    if (event?.event === 'device_code') {
      const url = String(event.verification_uri_complete ?? event.verification_uri)
      if (autoApprove) {
        say(
          'demo',
          `--auto-approve: approving code ${String(event.user_code)} in ${AUTO_APPROVE_DELAY_MS / 1000} s`,
        )
        setTimeout(() => {
          approveDevice(idp.issuer, String(event.user_code)).then(
            () => say('demo', 'approved (headless browser: login device-user, consent)'),
            (err: unknown) => say('demo', `auto-approve failed: ${(err as Error).message}`),
          )
        }, AUTO_APPROVE_DELAY_MS).unref()
      } else {
        say('demo', `open ${url} in a browser, log in with any name and password, and approve`)
      }
    }
    if (event?.event === 'signed_in') signedIn = true
  })
  const loginOutcome = await Promise.race([
    loginDone.then(([code]) => code),
    stop.promise.then(() => 'stopped'),
  ])
  if (loginOutcome !== 0) {
    await stopChild(login)
    say(
      'demo',
      loginOutcome === 'stopped'
        ? 'stopped before the sign-in finished'
        : `login failed (exit ${loginOutcome})`,
    )
    summary({ signedIn, renewals: 0, records: api.records(), agentExit: null })
    return loginOutcome === 'stopped' ? 0 : 1
  }
  say('demo', 'signed in; the refresh token is in the encrypted store')

  // 2. The agent daemon and a sensor.
  const agent = spawnCli(['run', '--json'], env)
  const activity = createActivitySummary({ print: (line) => say('api', line) })
  api.watch(activity)
  let renewals = 0
  lines(agent.stderr, (line) => {
    // Renewals get the demo's own line and batches the summary: drop the agent's per-event lines.
    if (!/^edgetoken: (renewed|uploaded batch)/.test(line)) say('agent', line)
  })
  lines(agent.stdout, (line) => {
    const event = parseEvent(line)
    if (event?.event === 'renewed') {
      renewals += 1
      activity.renewal()
      say('agent', tint('1;33', renewalLine(event, renewals)))
    }
  })
  const sensor = await startSensorSimulator({
    url: broker.url,
    deviceId: DEVICE_ID,
    sensor: 'greenhouse-1',
    intervalMs: sensorIntervalMs,
  })
  cleanups.push(() => sensor.close())
  say('sensor', `publishing a reading every ${sensorIntervalMs} ms to edgetoken/${DEVICE_ID}/readings`)
  say('demo', durationSeconds ? `running for ${durationSeconds} s` : 'running; press Ctrl-C to stop')
  stop.arm(durationSeconds)

  const agentEnded = (once(agent, 'exit') as Promise<[number | null]>).then(([code]) => code)
  const why = await Promise.race([stop.promise, agentEnded.then((code) => `the agent exited (${code})`)])
  say('demo', `stopping: ${why}`)
  await sensor.close()
  const agentExit = await stopChild(agent)
  activity.stop()
  say('demo', `agent exited with ${agentExit}`)
  summary({ signedIn, renewals, records: api.records(), agentExit })
  return agentExit === 0 ? 0 : 1
}

function summary(s: {
  signedIn: boolean
  renewals: number
  records: number
  agentExit: number | null
}): void {
  out.close()
  process.stdout.write(
    `demo: summary ${JSON.stringify({ signed_in: s.signedIn, renewals: s.renewals, records_received: s.records, agent_exit: s.agentExit })}\n`,
  )
}

let code = 1
try {
  code = await main()
} catch (err) {
  out.close()
  process.stderr.write(`demo: ${(err as Error).message}\n`)
} finally {
  for (const child of children) child.kill('SIGKILL')
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined)
}
process.exit(code)
