/**
 * The demo's command line and the shaping of its output, apart from test/demo.ts (which starts
 * servers when imported) so both are unit-tested with an injected clock.
 *
 * @packageDocumentation
 */
import { parseArgs } from 'node:util'

/** The demo's usage, printed with `--help` (stdout) and after a usage error (stderr). */
export const DEMO_USAGE = `Usage: npm run demo -- [options]

  --auto-approve            approve the sign-in headlessly after 3 s
  --duration-seconds N      stop by itself N seconds after the agent started (exit 0)
  --token-ttl-seconds N     access-token lifetime at the IdP (default 30)
  --sensor-interval-ms N    time between sensor readings (default 1000)
  -h, --help                this text
`

/** What the demo was asked to do. */
export interface DemoOptions {
  readonly autoApprove: boolean
  /** Stop this long after the agent started; undefined runs until Ctrl-C. */
  readonly durationSeconds: number | undefined
  readonly tokenTtlSeconds: number
  readonly sensorIntervalMs: number
}

/** A parse of the demo's argv. */
export type DemoArgs =
  | { readonly kind: 'run'; readonly options: DemoOptions }
  | { readonly kind: 'help' }
  /** A usage error: one line naming the bad argument (exit 2 with the usage). */
  | { readonly kind: 'error'; readonly message: string }

const OPTIONS = {
  'auto-approve': { type: 'boolean' },
  'duration-seconds': { type: 'string' },
  'token-ttl-seconds': { type: 'string' },
  'sensor-interval-ms': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const
const MAX_NUMBER = 86_400

/**
 * Parses the demo's arguments. Lenient `parseArgs` tokens, checked here, so that every mistake is
 * one line of our own wording (strict `parseArgs` throws multi-line messages for some).
 *
 * @param argv - the arguments after the script.
 * @returns the options, `help`, or a one-line usage error. Never throws.
 */
export function parseDemoArgs(argv: readonly string[]): DemoArgs {
  const { tokens } = parseArgs({
    args: [...argv],
    options: OPTIONS,
    strict: false,
    allowPositionals: true,
    tokens: true,
  })
  const given: Record<string, string | true> = {}
  for (const token of tokens) {
    if (token.kind === 'option-terminator') continue
    if (token.kind === 'positional') return { kind: 'error', message: `unexpected argument '${token.value}'` }
    const spec = Object.hasOwn(OPTIONS, token.name) ? OPTIONS[token.name as keyof typeof OPTIONS] : undefined
    if (spec === undefined) return { kind: 'error', message: `unknown option '${token.rawName}'` }
    const name = `--${token.name}`
    if (spec.type === 'boolean') {
      if (token.value !== undefined) return { kind: 'error', message: `${name} takes no value` }
      given[token.name] = true
      continue
    }
    // `--duration-seconds --auto-approve`: the next option is not meant as this one's value.
    if (token.value === undefined || (token.inlineValue === false && token.value.startsWith('-'))) {
      return { kind: 'error', message: `${name} needs a value (a whole number)` }
    }
    given[token.name] = token.value
  }
  if (given.help === true) return { kind: 'help' }
  const numbers: Record<string, number | undefined> = {}
  for (const name of ['duration-seconds', 'token-ttl-seconds', 'sensor-interval-ms'] as const) {
    const text = given[name]
    if (typeof text !== 'string') continue
    const n = /^[0-9]{1,6}$/.test(text) ? Number(text) : Number.NaN
    if (!(n >= 1 && n <= MAX_NUMBER)) {
      return {
        kind: 'error',
        message: `--${name} must be a whole number from 1 to ${MAX_NUMBER}, not '${text}'`,
      }
    }
    numbers[name] = n
  }
  return {
    kind: 'run',
    options: {
      autoApprove: given['auto-approve'] === true,
      durationSeconds: numbers['duration-seconds'],
      tokenTtlSeconds: numbers['token-ttl-seconds'] ?? 30,
      sensorIntervalMs: numbers['sensor-interval-ms'] ?? 1000,
    },
  }
}

/**
 * The highlighted line for one silent renewal, from the agent's `renewed` NDJSON event.
 *
 * @param event - the parsed event (`{"event":"renewed","expires_at","next_renewal_at"}`).
 * @param n - how many renewals so far, this one included.
 * @returns `★ silent renewal #2: new access token, expires 10:31:05 UTC (next renewal 10:30:57 UTC)`.
 */
export function renewalLine(event: Readonly<Record<string, unknown>>, n: number): string {
  const clock = (iso: unknown) =>
    typeof iso === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/.test(iso) ? `${iso.slice(11, 19)} UTC` : '?'
  const next = event.next_renewal_at === undefined ? '' : ` (next renewal ${clock(event.next_renewal_at)})`
  return `★ silent renewal #${n}: new access token, expires ${clock(event.expires_at)}${next}`
}

/** Options of {@link createActivitySummary}. */
export interface ActivitySummaryOptions {
  /** Receives each summary line. */
  print: (line: string) => void
  /** The window, in ms; default 10 000. */
  windowMs?: number
  /** The clock, in ms since the epoch; default `Date.now`. */
  now?: () => number
}

/** Counts the demo's traffic and prints one line per window instead of one per batch. */
export interface ActivitySummary {
  /**
   * Counts one batch the API received.
   *
   * @param records - its record count.
   */
  batch(records: number): void
  /** Counts one silent renewal (printed on its own line by the caller too). */
  renewal(): void
  /** Prints the line for the window so far (also when nothing happened: a stalled upload shows). */
  flush(): void
  /** Stops the timer and prints what the last, partial window saw. Idempotent. */
  stop(): void
}

/**
 * Starts a summary that prints, every `windowMs`, the records, batches and renewals of that
 * window and the records so far, e.g. `last 10 s: 31 records in 16 batches, 1 renewal (37 in all)`.
 *
 * @param options - where to print, the window and the clock.
 * @returns the summary; its timer does not keep the process alive.
 */
export function createActivitySummary(options: ActivitySummaryOptions): ActivitySummary {
  const windowMs = options.windowMs ?? 10_000
  const now = options.now ?? Date.now
  let started = now()
  let records = 0
  let batches = 0
  let renewals = 0
  let total = 0
  let stopped = false

  const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`
  const flush = () => {
    const seconds = Math.max(1, Math.round((now() - started) / 1000))
    const traffic =
      batches === 0
        ? 'no batches received'
        : `${plural(records, 'record', 'records')} in ${plural(batches, 'batch', 'batches')}`
    const renewed = renewals === 0 ? '' : `, ${plural(renewals, 'renewal', 'renewals')}`
    options.print(`last ${seconds} s: ${traffic}${renewed} (${plural(total, 'record', 'records')} in all)`)
    started = now()
    records = 0
    batches = 0
    renewals = 0
  }
  const timer = setInterval(flush, windowMs)
  timer.unref()

  return {
    batch(n) {
      records += n
      batches += 1
      total += n
    },
    renewal() {
      renewals += 1
    },
    flush,
    stop() {
      if (stopped) return
      stopped = true
      clearInterval(timer)
      // A window shorter than a second says little and would repeat the last line's totals.
      if (now() - started >= 1000 || batches > 0 || renewals > 0) flush()
    },
  }
}
