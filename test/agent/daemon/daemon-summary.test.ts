/**
 * Issue 21: the daemon's summary line, every ten minutes by default, with what happened since
 * the previous one. Fake timers: no ten-minute wait.
 */
import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, mock, test } from 'node:test'
import {
  DEFAULT_SUMMARY_INTERVAL_MS,
  type SummaryTotals,
  startDaemonSummary,
  summaryLine,
} from '../../../src/agent/daemon/daemon-summary.js'

/** Lets the summary's awaited spool read settle after a tick. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve))

describe('issue 21: the periodic summary', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setInterval'] }))
  afterEach(() => mock.timers.reset())

  test('issue 21: one line every 10 minutes with the counts of that period and the spool', async () => {
    const totals: SummaryTotals = { uploadedRecords: 0, uploadedBatches: 0, renewals: 0, received: 0 }
    let pending = 7
    const lines: string[] = []
    const summary = startDaemonSummary({
      totals: () => ({ ...totals }),
      pending: async () => pending,
      log: (line) => lines.push(line),
    })
    assert.equal(DEFAULT_SUMMARY_INTERVAL_MS, 600_000)
    Object.assign(totals, { uploadedRecords: 12_000, uploadedBatches: 600, renewals: 160, received: 12_007 })
    mock.timers.tick(599_999)
    await settle()
    assert.deepEqual(lines, [], 'nothing before ten minutes')
    mock.timers.tick(1)
    await settle()
    assert.deepEqual(lines, [
      'edgetoken: last 10 min: received 12007 readings, uploaded 12000 records in 600 batches, 160 renewals; spool 7 pending',
    ])
    // The next line counts only the next ten minutes.
    Object.assign(totals, { uploadedRecords: 12_001, uploadedBatches: 601, renewals: 161, received: 12_008 })
    pending = 0
    mock.timers.tick(600_000)
    await settle()
    assert.equal(
      lines[1],
      'edgetoken: last 10 min: received 1 reading, uploaded 1 record in 1 batch, 1 renewal; spool 0 pending',
    )
    summary.stop()
    mock.timers.tick(600_000)
    await settle()
    assert.equal(lines.length, 2, 'nothing after stop')
  })

  test('issue 21: without MQTT no readings count; an unreadable spool is named, not fatal', async () => {
    const lines: string[] = []
    const summary = startDaemonSummary({
      totals: () => ({ uploadedRecords: 0, uploadedBatches: 0, renewals: 0 }),
      pending: async () => {
        throw new Error('spool: EIO')
      },
      log: (line) => lines.push(line),
    })
    mock.timers.tick(600_000)
    await settle()
    summary.stop()
    assert.deepEqual(lines, [
      'edgetoken: last 10 min: uploaded 0 records in 0 batches, 0 renewals; spool unreadable (spool: EIO)',
    ])
  })

  test('a period under a second is refused (it would be a busy loop of spool reads)', () => {
    for (const intervalMs of [0, -1, 999, 1.5, Number.NaN]) {
      assert.throws(
        () =>
          startDaemonSummary({
            totals: () => ({ uploadedRecords: 0, uploadedBatches: 0, renewals: 0 }),
            pending: async () => 0,
            log: () => {},
            intervalMs,
          }),
        { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' },
      )
    }
  })

  test('summaryLine names a period under a minute in seconds', () => {
    assert.equal(
      summaryLine('30 s', { uploadedRecords: 2, uploadedBatches: 1, renewals: 0 }, 0),
      'edgetoken: last 30 s: uploaded 2 records in 1 batch, 0 renewals; spool 0 pending',
    )
  })
})
