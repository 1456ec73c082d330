/**
 * A real MQTT broker for tests: Debian's mosquitto 2.0 run in the foreground with a generated config
 * (MQTT 3.1.1 and 5, optional TLS + password file), or aedes in-process when mosquitto is not installed
 * (MQTT 3.1.1 only; `kind: 'aedes'` lets v5-only tests skip).
 *
 * Set `EDGETOKEN_TEST_BROKER=aedes` to force the fallback, `MOSQUITTO_BIN` to use another binary.
 *
 * @packageDocumentation
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server, type Socket } from 'node:net'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { createServer as createTlsServer } from 'node:tls'
import { promisify } from 'node:util'
import type { IClientOptions } from 'mqtt'
import { reapWithProcess } from './reap.js'
import { createTestPki } from './tls.js'

const run = promisify(execFile)

/** Options of {@link startBroker}. */
export interface BrokerOptions {
  /** Serve `mqtts://` with a test CA, and require username/password. Default false. */
  tls?: boolean
  /** Require this username (default `edge` when `tls` is on; anonymous otherwise). */
  username?: string
  /** Require this password (default: random when `tls` is on or a username is given). */
  password?: string
  /** Listen on this port (for restart tests); default: a free port. */
  port?: number
}

/** A running test broker. */
export interface TestBroker {
  /** `mqtt://127.0.0.1:PORT` or `mqtts://127.0.0.1:PORT`. */
  url: string
  /** The TCP port on 127.0.0.1. */
  port: number
  /** Which broker runs; aedes speaks MQTT 3.1.1 only. */
  kind: 'mosquitto' | 'aedes'
  /** The CA that signed the server certificate (trust it), and a client certificate, when TLS is on. */
  tls?: { caFile: string; ca: Buffer; clientCertFile?: string; clientKeyFile?: string }
  /** The username the broker requires, if any. */
  username?: string
  /** The password the broker requires, if any. */
  password?: string
  /** Stops the broker; the port becomes free. Idempotent. */
  stop(): Promise<void>
  /** Stops and starts again on the same port with the same config. */
  restart(): Promise<void>
  /** Stops the broker and removes its temp files. Idempotent. */
  close(): Promise<void>
}

const READY_TIMEOUT_MS = 10_000
const STOP_GRACE_MS = 5_000

/**
 * Finds a free TCP port on 127.0.0.1 (mosquitto cannot listen on port 0).
 *
 * @returns a port that was free a moment ago.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => (port ? resolve(port) : reject(new Error('no port assigned'))))
    })
  })
}

/**
 * The mosquitto binary to use, or undefined when it is not installed (or aedes is forced).
 *
 * @returns an absolute path or a name on PATH.
 */
export function mosquittoBinary(): string | undefined {
  if (process.env.EDGETOKEN_TEST_BROKER === 'aedes') return undefined
  const candidates = [process.env.MOSQUITTO_BIN, '/usr/sbin/mosquitto', '/usr/local/sbin/mosquitto']
  for (const c of candidates) if (c && existsSync(c)) return c
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, 'mosquitto'))) return join(dir, 'mosquitto')
  }
  return undefined
}

/**
 * mqtt.js client options for a test broker: credentials and CA from the broker, no reconnect
 * (a failed connect rejects instead of retrying), a short connect timeout.
 *
 * @param broker - the broker to connect to.
 * @param extra - options that override the defaults (e.g. `protocolVersion: 5`).
 * @returns options for `mqtt.connect(broker.url, options)`.
 */
export function clientOptions(broker: TestBroker, extra: IClientOptions = {}): IClientOptions {
  const options: IClientOptions = {
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    clientId: `test-${randomBytes(6).toString('hex')}`,
  }
  if (broker.username !== undefined) options.username = broker.username
  if (broker.password !== undefined) options.password = broker.password
  if (broker.tls) {
    options.ca = broker.tls.ca
    options.rejectUnauthorized = true
  }
  return { ...options, ...extra }
}

interface Engine {
  start(port: number): Promise<void>
  stop(): Promise<void>
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}

function mosquittoEngine(bin: string, dir: string, configLines: (port: number) => string[]): Engine {
  let child: ChildProcess | undefined
  return {
    async start(port) {
      const configFile = join(dir, 'mosquitto.conf')
      await writeFile(configFile, `${configLines(port).join('\n')}\n`)
      // setpriv --pdeathsig: the broker dies with this process even if it is SIGKILLed.
      const setpriv = existsSync('/usr/bin/setpriv') ? '/usr/bin/setpriv' : undefined
      const proc = setpriv
        ? spawn(setpriv, ['--pdeathsig', 'KILL', bin, '-c', configFile], {
            stdio: ['ignore', 'ignore', 'pipe'],
          })
        : spawn(bin, ['-c', configFile], { stdio: ['ignore', 'ignore', 'pipe'] })
      reapWithProcess(proc)
      child = proc
      // Keep only the tail of the log for error messages; the pipe must be drained or mosquitto blocks.
      let log = ''
      await new Promise<void>((resolve, reject) => {
        const fail = (why: string) => {
          clearTimeout(timer)
          proc.kill('SIGKILL')
          reject(new Error(`mosquitto did not start on port ${port}: ${why}\n${log.slice(-2000)}`))
        }
        const timer = setTimeout(() => fail('timeout'), READY_TIMEOUT_MS)
        proc.stderr?.setEncoding('utf8')
        proc.stderr?.on('data', (chunk: string) => {
          log = (log + chunk).slice(-8000)
          if (/ running\b/.test(log)) {
            clearTimeout(timer)
            resolve()
          }
        })
        proc.once('error', (err) => fail(err.message))
        proc.once('exit', (code, signal) => fail(`exited (${code ?? signal})`))
      })
    },
    async stop() {
      const proc = child
      child = undefined
      if (!proc) return
      proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_GRACE_MS)
      await waitExit(proc)
      clearTimeout(timer)
    },
  }
}

async function aedesEngine(
  tls: { cert: Buffer; key: Buffer } | undefined,
  auth: Auth | undefined,
): Promise<Engine> {
  const { Aedes } = await import('aedes')
  let server: Server | undefined
  let broker: InstanceType<typeof Aedes> | undefined
  const sockets = new Set<Socket>()
  return {
    async start(port) {
      const b = await Aedes.createBroker()
      if (auth) {
        b.authenticate = (_client, username, password, done) => {
          const ok = username === auth.username && password?.toString('utf8') === auth.password
          if (ok) done(null, true)
          else done(Object.assign(new Error('bad credentials'), { returnCode: 4 }) as never, false)
        }
      }
      const s = tls ? createTlsServer({ cert: tls.cert, key: tls.key }, b.handle) : createServer(b.handle)
      s.on('connection', (socket: Socket) => {
        sockets.add(socket)
        socket.once('close', () => sockets.delete(socket))
      })
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject)
        s.listen(port, '127.0.0.1', () => resolve())
      })
      broker = b
      server = s
    },
    async stop() {
      const s = server
      const b = broker
      server = undefined
      broker = undefined
      if (!s || !b) return
      for (const socket of sockets) socket.destroy()
      sockets.clear()
      await new Promise<void>((resolve) => s.close(() => resolve()))
      await new Promise<void>((resolve) => b.close(() => resolve()))
    },
  }
}

interface Auth {
  username: string
  password: string
}

/**
 * Starts a broker on 127.0.0.1: mosquitto when installed, else aedes.
 *
 * Plain brokers allow anonymous clients unless a username or password is given; TLS brokers always
 * require a username (default `edge`) and password (default random). The TLS CA and a client
 * certificate are in `broker.tls`. Always `close()` it (e.g. in `t.after`).
 *
 * @param options - TLS, credentials, port.
 * @returns the running broker.
 * @throws when the broker cannot start (the message carries the tail of its log).
 * @example
 * ```ts
 * const broker = await startBroker({ tls: true })
 * t.after(() => broker.close())
 * const client = await mqtt.connectAsync(broker.url, clientOptions(broker, { protocolVersion: 5 }))
 * ```
 */
export async function startBroker(options: BrokerOptions = {}): Promise<TestBroker> {
  const dir = await mkdtemp(join(tmpdir(), 'edgetoken-broker-'))
  try {
    const useTls = options.tls === true
    const needAuth = useTls || options.username !== undefined || options.password !== undefined
    const auth: Auth | undefined = needAuth
      ? {
          username: options.username ?? 'edge',
          password: options.password ?? randomBytes(12).toString('hex'),
        }
      : undefined
    const pki = useTls ? await createTestPki({ dir }) : undefined
    const bin = mosquittoBinary()
    let engine: Engine
    if (bin) {
      const passwordFile = join(dir, 'passwords')
      if (auth) await run('mosquitto_passwd', ['-c', '-b', passwordFile, auth.username, auth.password])
      const user = userInfo().username
      engine = mosquittoEngine(bin, dir, (port) => [
        'per_listener_settings false',
        // As root, mosquitto would drop to user "mosquitto", who cannot read our 0700 temp dir.
        `user ${user}`,
        'persistence false',
        'log_dest stderr',
        'log_type error',
        'log_type warning',
        'log_type notice',
        'log_type information',
        'connection_messages false',
        `listener ${port} 127.0.0.1`,
        ...(auth ? ['allow_anonymous false', `password_file ${passwordFile}`] : ['allow_anonymous true']),
        ...(pki
          ? [`cafile ${pki.caFile}`, `certfile ${pki.serverCertFile}`, `keyfile ${pki.serverKeyFile}`]
          : []),
      ])
    } else {
      const tlsFiles = pki
        ? { cert: await readFile(pki.serverCertFile), key: await readFile(pki.serverKeyFile) }
        : undefined
      engine = await aedesEngine(tlsFiles, auth)
    }

    // A free port can be taken by someone else before the broker binds it: retry with a new one.
    let port = options.port ?? (await freePort())
    for (let attempt = 1; ; attempt++) {
      try {
        await engine.start(port)
        break
      } catch (err) {
        if (options.port !== undefined || attempt >= 3) throw err
        port = await freePort()
      }
    }

    let closed = false
    const broker: TestBroker = {
      url: `${useTls ? 'mqtts' : 'mqtt'}://127.0.0.1:${port}`,
      port,
      kind: bin ? 'mosquitto' : 'aedes',
      stop: () => engine.stop(),
      restart: async () => {
        if (closed) throw new Error('broker is closed')
        await engine.stop()
        await engine.start(port)
      },
      close: async () => {
        if (closed) return
        closed = true
        await engine.stop()
        await rm(dir, { recursive: true, force: true })
      },
    }
    if (pki) {
      broker.tls = {
        caFile: pki.caFile,
        ca: pki.ca,
        clientCertFile: pki.clientCertFile,
        clientKeyFile: pki.clientKeyFile,
      }
    }
    if (auth) {
      broker.username = auth.username
      broker.password = auth.password
    }
    return broker
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}
