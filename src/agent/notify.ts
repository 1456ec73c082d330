/**
 * systemd service notifications (`sd_notify`): READY=1, STATUS=…, WATCHDOG=1, STOPPING=1.
 *
 * The protocol is one datagram of `KEY=VALUE` lines sent to the AF_UNIX socket named by
 * `$NOTIFY_SOCKET` (a leading `@` means the abstract namespace). Node cannot send AF_UNIX datagrams
 * by itself, so each notification runs systemd's own `systemd-notify(1)`, which every systemd
 * machine has. Why not a native addon (npm `unix-dgram`): it must be compiled with node-gyp on every
 * device (a compiler and python3 on a Pi) and npm is moving to blocking dependency install scripts
 * by default, so `npm install -g edgetoken` would silently end up without it.
 *
 * What this costs, and how it is handled:
 * - the sender is a child process, not the main PID: the unit sets `NotifyAccess=all`;
 * - a message from a process that exits at once may not be attributed to the unit: systemd-notify
 *   (systemd >= 246, without `--no-block`) waits on a barrier until PID 1 has processed it;
 * - a process per message: only WATCHDOG=1 is periodic, every `WatchdogSec/2` (30 s by default).
 *
 * Nothing here keeps the event loop alive: children and timers are unref'd, so the daemon exits as
 * soon as its real work is done.
 *
 * @see https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html
 * @see https://www.freedesktop.org/software/systemd/man/latest/systemd-notify.html
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { EdgeTokenError } from '../errors.js'

/** Sends service state to systemd. Every method resolves (never rejects) to whether it was delivered. */
export interface Notifier {
  /**
   * Start-up is complete (`READY=1`): for `Type=notify`, systemd starts dependent units now.
   *
   * @param status - an optional status line shown by `systemctl status`.
   * @returns whether systemd got it.
   */
  ready(status?: string): Promise<boolean>
  /**
   * A free-form status line (`STATUS=…`) shown by `systemctl status`. Control characters are
   * replaced and the text is capped at 200 characters; never put a secret in it.
   *
   * @param text - the status.
   * @returns whether systemd got it.
   */
  status(text: string): Promise<boolean>
  /**
   * One watchdog keep-alive (`WATCHDOG=1`). Usually sent by {@link Notifier.startWatchdog}.
   *
   * @returns whether systemd got it.
   */
  watchdog(): Promise<boolean>
  /**
   * Shutdown has begun (`STOPPING=1`).
   *
   * @param status - an optional status line.
   * @returns whether systemd got it.
   */
  stopping(status?: string): Promise<boolean>
  /**
   * The keep-alive period in ms: half of `$WATCHDOG_USEC`, or undefined when systemd set no
   * watchdog for this process.
   */
  readonly watchdogIntervalMs: number | undefined
  /**
   * Sends `WATCHDOG=1` every {@link Notifier.watchdogIntervalMs} on an unref'd timer, so a blocked
   * event loop stops the pings and systemd restarts the service. A no-op without a watchdog;
   * calling it again does not start a second timer.
   *
   * @returns a function that stops the pings.
   */
  startWatchdog(): () => void
  /** Stops the watchdog pings; later notifications resolve to false without being sent. */
  close(): void
}

/** Options of {@link createNotifier}. */
export interface CreateNotifierOptions {
  /** The notify tool. Default `systemd-notify`, looked up in `$PATH`. */
  command?: string
  /** Kill a notify process that has not finished after this long, ms. Default 15000. */
  timeoutMs?: number
  /** This process's PID, compared with `$WATCHDOG_PID`. Default `process.pid`. */
  pid?: number
  /**
   * Called when a notification could not be delivered: once, until one succeeds again, so a
   * missing tool does not flood the journal every watchdog period. Default: ignore.
   */
  onError?: (error: EdgeTokenError) => void
}

/** The environment variables this module reads (a subset of `process.env`). */
export type NotifyEnv = Readonly<Record<string, string | undefined>>

const STATUS_MAX_CHARS = 200
const DEFAULT_TIMEOUT_MS = 15_000

/**
 * The watchdog keep-alive period systemd asks of this process: half of `$WATCHDOG_USEC`, as
 * `sd_watchdog_enabled(3)` recommends; undefined when there is no watchdog or it is meant for
 * another process (`$WATCHDOG_PID`).
 *
 * @param env - the environment (`process.env`).
 * @param pid - this process's PID. Default `process.pid`.
 * @returns the period in ms, or undefined.
 * @see https://www.freedesktop.org/software/systemd/man/latest/sd_watchdog_enabled.html
 */
export function watchdogIntervalMs(env: NotifyEnv, pid: number = process.pid): number | undefined {
  const usec = env.WATCHDOG_USEC
  if (usec === undefined || !/^[1-9][0-9]{0,15}$/.test(usec)) return undefined
  const owner = env.WATCHDOG_PID
  if (owner !== undefined && owner !== '' && owner !== String(pid)) return undefined
  return Math.max(1, Math.floor(Number(usec) / 2000))
}

/**
 * Creates a notifier for the service manager that started this process.
 *
 * @param env - the environment; `$NOTIFY_SOCKET`, `$WATCHDOG_USEC`, `$WATCHDOG_PID` are read.
 *   Default `process.env`.
 * @param options - the notify tool, its timeout, an error callback.
 * @returns a {@link Notifier}, or undefined when `$NOTIFY_SOCKET` is not set (not started by
 *   systemd with `Type=notify`): callers then skip notifications entirely.
 * @example
 * ```ts
 * const notifier = createNotifier(process.env, { onError: (e) => log.warn(e.message) })
 * await notifier?.ready('waiting for sign-in')
 * const stopWatchdog = notifier?.startWatchdog()
 * ```
 */
export function createNotifier(
  env: NotifyEnv = process.env,
  options: CreateNotifierOptions = {},
): Notifier | undefined {
  const socket = env.NOTIFY_SOCKET
  if (socket === undefined || socket === '') return undefined
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw Object.assign(new TypeError('options.timeoutMs must be a positive number'), {
      code: 'ERR_INVALID_ARG_VALUE',
    })
  }
  return new SystemdNotifier(socket, env.PATH ?? process.env.PATH ?? '/usr/bin:/bin', {
    command: options.command ?? 'systemd-notify',
    timeoutMs,
    interval: watchdogIntervalMs(env, options.pid ?? process.pid),
    onError: options.onError,
  })
}

interface NotifierConfig {
  command: string
  timeoutMs: number
  interval: number | undefined
  onError: ((error: EdgeTokenError) => void) | undefined
}

class SystemdNotifier implements Notifier {
  readonly watchdogIntervalMs: number | undefined
  readonly #socket: string
  readonly #path: string
  readonly #config: NotifierConfig
  // Notifications go out one at a time, in order: READY=1 must not overtake an earlier STATUS.
  #tail: Promise<unknown> = Promise.resolve()
  #timer: NodeJS.Timeout | undefined
  #watchdogQueued = false
  #failing = false
  #closed = false

  constructor(socket: string, path: string, config: NotifierConfig) {
    this.#socket = socket
    this.#path = path
    this.#config = config
    this.watchdogIntervalMs = config.interval
  }

  ready(status?: string): Promise<boolean> {
    return this.#send(withStatus(['READY=1'], status))
  }

  status(text: string): Promise<boolean> {
    return this.#send(withStatus([], text))
  }

  watchdog(): Promise<boolean> {
    // A ping already waiting in the queue does the job of this one.
    if (this.#watchdogQueued) return Promise.resolve(true)
    this.#watchdogQueued = true
    return this.#send(['WATCHDOG=1'], () => {
      this.#watchdogQueued = false
    })
  }

  stopping(status?: string): Promise<boolean> {
    return this.#send(withStatus(['STOPPING=1'], status))
  }

  startWatchdog(): () => void {
    const interval = this.watchdogIntervalMs
    if (interval !== undefined && this.#timer === undefined && !this.#closed) {
      this.#timer = setInterval(() => void this.watchdog(), interval)
      this.#timer.unref()
    }
    return () => this.#stopWatchdog()
  }

  close(): void {
    this.#closed = true
    this.#stopWatchdog()
  }

  #stopWatchdog(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer)
    this.#timer = undefined
  }

  #send(fields: string[], onStart?: () => void): Promise<boolean> {
    if (this.#closed || fields.length === 0) {
      onStart?.()
      return Promise.resolve(false)
    }
    const result = this.#tail.then(() => {
      onStart?.()
      return this.#run(fields)
    })
    this.#tail = result
    return result
  }

  #run(fields: string[]): Promise<boolean> {
    return new Promise((resolve) => {
      let settled = false
      let killer: NodeJS.Timeout | undefined
      const finish = (error: EdgeTokenError | undefined) => {
        if (settled) return
        settled = true
        clearTimeout(killer)
        if (error === undefined) {
          this.#failing = false
        } else if (!this.#failing) {
          this.#failing = true
          this.#config.onError?.(error)
        }
        resolve(error === undefined)
      }
      // Only what systemd-notify needs; the daemon's environment may hold secrets' paths.
      // Without --no-block, systemd-notify waits until PID 1 has processed the message (barrier).
      let child: ChildProcess
      try {
        child = spawn(this.#config.command, fields, {
          stdio: 'ignore',
          env: { PATH: this.#path, NOTIFY_SOCKET: this.#socket },
        })
      } catch (err) {
        // e.g. a command or socket name with a NUL byte: spawn() throws instead of emitting.
        finish(notifyError(`cannot run ${this.#config.command}`, err))
        return
      }
      killer = setTimeout(() => {
        child.kill('SIGKILL')
        finish(notifyError(`systemd-notify did not finish within ${this.#config.timeoutMs} ms`))
      }, this.#config.timeoutMs)
      killer.unref()
      child.unref()
      child.once('error', (err) =>
        finish(notifyError(`cannot run ${this.#config.command}: ${err.message}`, err)),
      )
      child.once('exit', (code, signal) => {
        if (code === 0) finish(undefined)
        else
          finish(
            notifyError(`systemd-notify failed (${signal ?? `exit ${code}`}): is $NOTIFY_SOCKET reachable?`),
          )
      })
    })
  }
}

function withStatus(fields: string[], status: string | undefined): string[] {
  if (status === undefined) return fields
  return [...fields, `STATUS=${sanitizeStatus(status)}`]
}

/**
 * One printable line: a newline would start a new `KEY=VALUE` field in the datagram.
 *
 * @param text - the status text.
 * @returns the text, control characters replaced by spaces, at most 200 characters.
 */
function sanitizeStatus(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: removing control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').slice(0, STATUS_MAX_CHARS)
}

function notifyError(message: string, cause?: unknown): EdgeTokenError {
  return new EdgeTokenError('ERR_IO', message, cause === undefined ? undefined : { cause })
}
