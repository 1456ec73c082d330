/**
 * A real Redis for tests: Debian's redis-server 7 run in the foreground on a free loopback port, no
 * persistence, in its own temp directory. `stop()` and `start()` again on the same port give
 * outages; `pause()` (SIGSTOP) gives a Redis that accepts nothing and answers nothing (too slow).
 *
 * Set `REDIS_SERVER_BIN` to use another binary.
 *
 * @packageDocumentation
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { freePort } from './net.js'
import { reapWithProcess } from './reap.js'

const run = promisify(execFile)

/** Options of {@link startRedis}. */
export interface RedisOptions {
  /** Require this password (`requirepass`); the url then carries it. */
  password?: string
  /** Listen on this port; default: a free port. */
  port?: number
}

/** A running test Redis. */
export interface TestRedis {
  /** `redis://127.0.0.1:PORT`, with `:password@` when a password is required. */
  url: string
  /** The TCP port on 127.0.0.1. */
  port: number
  /** Its working directory (where `SAVE` writes `dump.rdb`). */
  dir: string
  /** Runs one command with redis-cli; returns its raw output, trimmed. */
  command(...args: string[]): Promise<string>
  /** `SAVE`s and returns the RDB file: every byte Redis holds, keys, values and sets. */
  dump(): Promise<Buffer>
  /** Stops the server (SIGTERM, then SIGKILL); the port becomes free. Idempotent. */
  stop(): Promise<void>
  /** Starts it again on the same port (empty: no persistence). */
  start(): Promise<void>
  /** Freezes the process (SIGSTOP): connections stay open, nothing is answered. */
  pause(): void
  /** Thaws it (SIGCONT). */
  resume(): void
  /** Stops the server and removes its directory. Idempotent. */
  close(): Promise<void>
}

const READY_TIMEOUT_MS = 10_000
const STOP_GRACE_MS = 5_000

/**
 * The redis-server binary, or undefined when it is not installed.
 *
 * @returns an absolute path.
 */
export function redisServerBinary(): string | undefined {
  const candidates = [process.env.REDIS_SERVER_BIN, '/usr/bin/redis-server', '/usr/local/bin/redis-server']
  for (const c of candidates) if (c && existsSync(c)) return c
  return undefined
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}

/**
 * Starts redis-server on 127.0.0.1 (no RDB snapshots, no AOF). Always `close()` it (e.g. in `t.after`).
 *
 * @param options - password, port.
 * @returns the running server.
 * @throws when redis-server is not installed or does not start (the message carries its log's tail).
 * @example
 * ```ts
 * const redis = await startRedis()
 * t.after(() => redis.close())
 * const cache = new RedisTokenCache({ url: redis.url, key })
 * await redis.stop() // outage
 * await redis.start() // back, same port
 * ```
 */
export async function startRedis(options: RedisOptions = {}): Promise<TestRedis> {
  const bin = redisServerBinary()
  if (!bin) throw new Error('redis-server is not installed (apt-get install -y redis-server)')
  const dir = await mkdtemp(join(tmpdir(), 'edgetoken-redis-'))
  let child: ChildProcess | undefined

  const launch = async (port: number) => {
    const args = [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--loglevel',
      'notice',
      ...(options.password !== undefined ? ['--requirepass', options.password] : []),
    ]
    // setpriv --pdeathsig: the server dies with this process even if it is SIGKILLed.
    const proc = existsSync('/usr/bin/setpriv')
      ? spawn('/usr/bin/setpriv', ['--pdeathsig', 'KILL', bin, ...args], {
          stdio: ['ignore', 'pipe', 'pipe'],
        })
      : spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    reapWithProcess(proc)
    child = proc
    // Keep only the log's tail for error messages; the pipes must be drained or the server blocks.
    let log = ''
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => fail(err.message)
      const onExit = (code: number | null, signal: string | null) => fail(`exited (${code ?? signal})`)
      const settle = () => {
        clearTimeout(timer)
        proc.off('error', onError)
        proc.off('exit', onExit)
      }
      const fail = (why: string) => {
        settle()
        proc.kill('SIGKILL')
        reject(new Error(`redis-server did not start on port ${port}: ${why}\n${log.slice(-2000)}`))
      }
      const timer = setTimeout(() => fail('timeout'), READY_TIMEOUT_MS)
      const onData = (chunk: string) => {
        log = (log + chunk).slice(-8000)
        if (log.includes('Ready to accept connections')) {
          settle()
          resolve()
        }
      }
      proc.stdout?.setEncoding('utf8')
      proc.stderr?.setEncoding('utf8')
      proc.stdout?.on('data', onData)
      proc.stderr?.on('data', onData)
      proc.once('error', onError)
      proc.once('exit', onExit)
    })
  }

  const stop = async () => {
    const proc = child
    child = undefined
    if (!proc) return
    proc.kill('SIGCONT')
    proc.kill('SIGTERM')
    const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_GRACE_MS)
    await waitExit(proc)
    clearTimeout(timer)
  }

  try {
    // A free port can be taken by someone else before the server binds it: retry with a new one.
    let port = options.port ?? (await freePort())
    for (let attempt = 1; ; attempt++) {
      try {
        await launch(port)
        break
      } catch (err) {
        if (options.port !== undefined || attempt >= 3) throw err
        port = await freePort()
      }
    }
    const auth = options.password !== undefined ? ['-a', options.password, '--no-auth-warning'] : []
    const command = async (...args: string[]) => {
      const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...auth, ...args])
      return stdout.trim()
    }
    let closed = false
    const password = options.password
    return {
      url:
        password !== undefined
          ? `redis://:${encodeURIComponent(password)}@127.0.0.1:${port}`
          : `redis://127.0.0.1:${port}`,
      port,
      dir,
      command,
      async dump() {
        await command('SAVE')
        return readFile(join(dir, 'dump.rdb'))
      },
      stop,
      async start() {
        if (closed) throw new Error('redis is closed')
        if (child) return
        await launch(port)
      },
      pause() {
        child?.kill('SIGSTOP')
      },
      resume() {
        child?.kill('SIGCONT')
      },
      async close() {
        if (closed) return
        closed = true
        await stop()
        await rm(dir, { recursive: true, force: true })
      },
    }
  } catch (err) {
    await stop()
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}
