/**
 * The daemon's periodic summary: one log line every ten minutes with what happened since the
 * previous one (readings received, records and batches uploaded, renewals) and what the spool
 * still holds, in place of a line per batch and per renewal.
 *
 * Separate from the parts it counts because it only reads their counters: the uploads, the
 * renewals and the ingest keep counting whatever the log level, and this turns their totals into
 * differences once per period. One unref'd timer; nothing else runs between summaries.
 *
 * @packageDocumentation
 */
import { errorText } from './daemon-output.js'

/** Ten minutes: 144 lines a day, few enough for an SD card's journal, often enough to see a gap. */
export const DEFAULT_SUMMARY_INTERVAL_MS = 600_000

/** Running totals since the daemon started, as the summary reads them. */
export interface SummaryTotals {
  /** Records the API acknowledged. */
  uploadedRecords: number
  /** Batches the API acknowledged. */
  uploadedBatches: number
  /** Token requests (renewals). */
  renewals: number
  /** MQTT messages received, when MQTT is configured. */
  received?: number | undefined
}

/** Timer functions; injectable for tests. */
export interface SummaryTimers {
  setInterval: (callback: () => void, ms: number) => unknown
  clearInterval: (handle: unknown) => void
}

/** Options of {@link startDaemonSummary}. */
export interface DaemonSummaryOptions {
  /** The totals now. */
  totals: () => SummaryTotals
  /** Records pending in the spool now. */
  pending: () => Promise<number>
  /** Where the line goes (the daemon's `log`). */
  log: (line: string) => void
  /** Period, ms. Default {@link DEFAULT_SUMMARY_INTERVAL_MS}. */
  intervalMs?: number | undefined
  /** Timers. Default the global ones, unref'd. */
  timers?: SummaryTimers
}

/** A running summary; see {@link startDaemonSummary}. */
export interface DaemonSummaryTimer {
  /** Stops the timer (no final line: the daemon's `stopped` line sums up the whole run). */
  stop(): void
}

const defaultTimers: SummaryTimers = {
  setInterval(callback, ms) {
    const handle = setInterval(callback, ms)
    handle.unref()
    return handle
  },
  clearInterval(handle) {
    clearInterval(handle as ReturnType<typeof setInterval>)
  },
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`
}

/**
 * The summary line for a period.
 *
 * @param period - the period as written in the line: `10 min`.
 * @param delta - what happened in it.
 * @param pending - records pending in the spool now, or the reason it could not be read.
 * @returns e.g. `edgetoken: last 10 min: received 12000 readings, uploaded 12000 records in 600
 *   batches, 160 renewals; spool 12 pending`.
 */
export function summaryLine(period: string, delta: SummaryTotals, pending: number | string): string {
  const parts: string[] = []
  if (delta.received !== undefined) parts.push(`received ${plural(delta.received, 'reading', 'readings')}`)
  parts.push(
    `uploaded ${plural(delta.uploadedRecords, 'record', 'records')} in ${plural(delta.uploadedBatches, 'batch', 'batches')}`,
  )
  parts.push(plural(delta.renewals, 'renewal', 'renewals'))
  const spool = typeof pending === 'number' ? `spool ${pending} pending` : `spool unreadable (${pending})`
  return `edgetoken: last ${period}: ${parts.join(', ')}; ${spool}`
}

/**
 * Starts the periodic summary. The first line comes one period after the start.
 *
 * @param options - the counters, the spool, the log and the period.
 * @returns a handle to stop it.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` when `intervalMs` is not an integer of at least 1000.
 */
export function startDaemonSummary(options: DaemonSummaryOptions): DaemonSummaryTimer {
  const intervalMs = options.intervalMs ?? DEFAULT_SUMMARY_INTERVAL_MS
  // A period of 0 would be a busy loop of spool reads.
  if (!Number.isSafeInteger(intervalMs) || intervalMs < 1000) {
    throw Object.assign(new TypeError('intervalMs must be an integer of at least 1000'), {
      code: 'ERR_INVALID_ARG_VALUE',
    })
  }
  const timers = options.timers ?? defaultTimers
  const period =
    intervalMs % 60_000 === 0
      ? `${intervalMs / 60_000} min`
      : `${Math.max(1, Math.round(intervalMs / 1000))} s`
  let last = options.totals()
  let stopped = false
  let busy = false
  const tick = async () => {
    // A spool lock held for a whole period (a stuck disk) must not stack up summaries.
    if (busy) return
    busy = true
    try {
      const now = options.totals()
      const delta: SummaryTotals = {
        uploadedRecords: now.uploadedRecords - last.uploadedRecords,
        uploadedBatches: now.uploadedBatches - last.uploadedBatches,
        renewals: now.renewals - last.renewals,
        ...(now.received === undefined ? {} : { received: now.received - (last.received ?? 0) }),
      }
      last = now
      let pending: number | string
      try {
        pending = await options.pending()
      } catch (err) {
        pending = errorText(err)
      }
      if (!stopped) options.log(summaryLine(period, delta, pending))
    } finally {
      busy = false
    }
  }
  const handle = timers.setInterval(() => void tick(), intervalMs)
  return {
    stop() {
      stopped = true
      timers.clearInterval(handle)
    },
  }
}
