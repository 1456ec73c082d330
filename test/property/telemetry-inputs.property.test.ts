/**
 * Issue 16: property-based tests over the telemetry side's parsers of untrusted input: the NDJSON
 * that `send` reads from stdin, the spool's files as found on disk (segments and `state.json`
 * after a crash, a bad SD card or a hostile writer), and the telemetry API's answers to an upload.
 */
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { isObject } from '../../src/lib/validate.js'
import { jsonTooDeep } from '../../src/telemetry/json-depth.js'
import { readNdjson } from '../../src/telemetry/ndjson.js'
import { encodeFrame, segmentName } from '../../src/telemetry/spool/record-format.js'
import { openSpool } from '../../src/telemetry/spool/spool.js'
import { classifyAnswer } from '../../src/telemetry/upload/upload-outcome.js'
import {
  assertTypedError,
  bodyText,
  edgyJsonValue,
  forAll,
  httpStatus,
  label,
  mutatedObject,
  outcome,
  responseHeaders,
  spyJsonParse,
} from '../support/property.js'

// --- NDJSON (send) ------------------------------------------------------------------------------

const line = fc.oneof(
  { arbitrary: fc.object({ maxDepth: 2 }).map((o) => Buffer.from(JSON.stringify(o))), weight: 6 },
  { arbitrary: fc.jsonValue({ maxDepth: 2 }).map((v) => Buffer.from(JSON.stringify(v))), weight: 2 },
  {
    arbitrary: fc
      .constantFrom('', ' ', '\t', '\r', '{}\r', '{"a":1} ', '{"a":', '}{')
      .map((s) => Buffer.from(s)),
    weight: 2,
  },
  {
    arbitrary: fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b.filter((x) => x !== 0x0a))),
    weight: 2,
  },
  {
    arbitrary: fc
      .integer({ min: 60, max: 3000 })
      .map((d) => Buffer.from(`{"a":${'['.repeat(d)}${']'.repeat(d)}}`)),
    weight: 1,
  },
  // Around the line cap the test uses (256 bytes), with and without \r.
  {
    arbitrary: fc
      .tuple(fc.integer({ min: 240, max: 270 }), fc.boolean())
      .map(([n, cr]) => Buffer.from(`{"x":"${'x'.repeat(Math.max(0, n - 8))}"}${cr ? '\r' : ''}`)),
    weight: 1,
  },
)

const ndjsonInputs = fc
  .tuple(fc.array(line, { maxLength: 12 }), fc.boolean(), fc.boolean())
  .map(([lines, bom, trailingNewline]) => {
    const parts: Buffer[] = []
    if (bom) parts.push(Buffer.from([0xef, 0xbb, 0xbf]))
    lines.forEach((l, i) => {
      parts.push(l)
      if (i < lines.length - 1 || trailingNewline) parts.push(Buffer.from('\n'))
    })
    return Buffer.concat(parts)
  })

/** Cuts `bytes` at the given points (chunk boundaries fall anywhere, even inside a character). */
function chunked(bytes: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
  const out: Buffer[] = []
  let from = 0
  for (const p of [...points, bytes.length]) {
    if (p > from) out.push(bytes.subarray(from, p))
    from = Math.max(from, p)
  }
  return out
}

async function* stream(chunks: readonly (Buffer | string)[]) {
  for (const c of chunks) yield c
}

async function readAll(chunks: readonly (Buffer | string)[], maxLineBytes: number) {
  const items: ({ line: number; record: Record<string, unknown> } | { line: number; error: string })[] = []
  for await (const item of readNdjson(stream(chunks), { maxLineBytes })) items.push(item)
  return items
}

// --- spool files --------------------------------------------------------------------------------

/** A record's JSON text, numbered so the order of delivery can be checked. */
const recordText = (n: number, pad: number) => JSON.stringify({ n, v: 'r'.repeat(pad) })

type Piece =
  | { kind: 'frame'; pad: number }
  | { kind: 'bad-crc'; pad: number }
  | { kind: 'bad-length'; length: number }
  | { kind: 'noise'; bytes: Uint8Array }
  | { kind: 'torn'; pad: number; keep: number }

const piece: fc.Arbitrary<Piece> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('frame' as const), pad: fc.nat(60) }), weight: 8 },
  { arbitrary: fc.record({ kind: fc.constant('bad-crc' as const), pad: fc.nat(60) }), weight: 1 },
  {
    arbitrary: fc.record({
      kind: fc.constant('bad-length' as const),
      length: fc.constantFrom(0, 1, 7, 2 ** 20 + 1, 2 ** 32 - 1, 40),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({ kind: fc.constant('noise' as const), bytes: fc.uint8Array({ maxLength: 40 }) }),
    weight: 1,
  },
  {
    arbitrary: fc.record({ kind: fc.constant('torn' as const), pad: fc.nat(60), keep: fc.nat(80) }),
    weight: 1,
  },
)

/** Builds a segment's bytes; returns them and the record numbers of its intact frames, in order. */
function buildSegment(pieces: readonly Piece[], firstNumber: number): { bytes: Buffer; valid: number[] } {
  const parts: Buffer[] = []
  const valid: number[] = []
  let n = firstNumber
  for (const p of pieces) {
    if (p.kind === 'frame' || p.kind === 'bad-crc' || p.kind === 'torn') {
      const frame = encodeFrame(Buffer.from(recordText(n, p.pad)))
      if (p.kind === 'bad-crc') frame.writeUInt32LE((frame.readUInt32LE(4) ^ 0x5a5a5a5a) >>> 0, 4)
      if (p.kind === 'frame') valid.push(n)
      parts.push(p.kind === 'torn' ? frame.subarray(0, p.keep % frame.length) : frame)
      n++
    } else if (p.kind === 'bad-length') {
      const header = Buffer.alloc(8)
      header.writeUInt32LE(p.length >>> 0, 0)
      parts.push(header, Buffer.from('{"junk":true}'))
    } else {
      parts.push(Buffer.from(p.bytes))
    }
  }
  return { bytes: Buffer.concat(parts), valid }
}

const count = fc.oneof(fc.nat(12), fc.constantFrom(-1, 1.5, 2 ** 53, 1e300))
const stateFiles = fc.oneof(
  {
    arbitrary: mutatedObject({
      spoolId: fc.constantFrom('abcd1234', ''),
      acked: count,
      seq: count,
      cursor: fc.option(fc.record({ segment: count, index: count, offset: fc.oneof(count, fc.nat(2000)) }), {
        nil: undefined,
      }),
      inflight: fc.option(
        fc.record({
          start: count,
          count,
          seq: count,
          segment: count,
          offset: fc.nat(2000),
          endOffset: fc.nat(4000),
        }),
        { nil: undefined },
      ),
      limits: fc.option(fc.record({ maxRecords: count, maxBytes: count }), { nil: undefined }),
      deadLetteredRecords: fc.option(count, { nil: undefined }),
    }).map((o) => Buffer.from(JSON.stringify(o))),
    weight: 4,
  },
  { arbitrary: bodyText(edgyJsonValue(2)).map((s) => Buffer.from(s)), weight: 1 },
  { arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)), weight: 1 },
)

const spoolDirs = fc.record({
  segments: fc.array(
    fc.record({
      // undefined: the name the writer gives it (the global index of its first record).
      start: fc.option(fc.oneof(fc.nat(20), fc.constant(2 ** 53 - 1)), { freq: 5, nil: undefined }),
      pieces: fc.array(piece, { maxLength: 10 }),
    }),
    { minLength: 1, maxLength: 3 },
  ),
  state: fc.option(stateFiles, { freq: 2 }),
  drops: fc.option(stateFiles, { freq: 4 }),
  // Mostly one batch per segment: every acknowledgement waits for a background state write.
  maxRecords: fc.oneof(
    { arbitrary: fc.constant(100), weight: 3 },
    { arbitrary: fc.integer({ min: 1, max: 6 }), weight: 1 },
  ),
})

describe('issue 16: property tests over telemetry inputs', () => {
  test('send: NDJSON is read the same whatever the chunking; lines over the cap are never parsed', async (t) => {
    const MAX = 256
    const spy = spyJsonParse()
    t.after(() => spy.restore())
    await forAll(
      t,
      'NDJSON (send)',
      fc.tuple(ndjsonInputs, fc.array(fc.nat(), { maxLength: 8 })),
      async ([bytes, cuts]) => {
        spy.reset()
        const whole = await readAll([bytes], MAX)
        assert.ok(
          spy.lengths.every((n) => n <= MAX),
          'a line over the cap was parsed',
        )
        assert.deepEqual(await readAll(chunked(bytes, cuts), MAX), whole, 'the chunking changed the result')
        const lines = bytes.toString('latin1').split('\n')
        let previous = 0
        for (const item of whole) {
          assert.ok(
            item.line > previous && item.line <= lines.length,
            'line numbers increase, within the input',
          )
          previous = item.line
          if ('record' in item) {
            assert.ok(isObject(item.record))
            assert.ok(!jsonTooDeep(Buffer.from(JSON.stringify(item.record))))
          } else {
            assert.match(
              item.error,
              /^(longer than \d+ bytes|nested deeper than \d+ levels|not valid JSON|not a JSON object)$/,
            )
          }
        }
        // Every line that is a JSON object within the caps comes out as that record.
        const raw = bytes.toString('binary').split('\n')
        raw.forEach((text, i) => {
          let b = Buffer.from(text, 'binary')
          // The cap counts the line as read, a leading byte-order mark included, with one byte
          // of slack for a \r.
          if (b.length > MAX + 1) return
          if (i === 0 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) b = b.subarray(3)
          if (b.at(-1) === 0x0d) b = b.subarray(0, -1)
          if (b.length > MAX || jsonTooDeep(b)) return
          let value: unknown
          try {
            value = JSON.parse(b.toString('utf8'))
          } catch {
            return
          }
          if (!isObject(value)) return
          const item = whole.find((it) => it.line === i + 1)
          assert.ok(item && 'record' in item, `line ${i + 1} is a valid record but was not returned`)
          assert.deepEqual(item.record, value)
        })
        return whole.some((it) => 'record' in it) ? 'some records' : 'no records'
      },
      { numRuns: 500 },
    )
  })

  test('spool: any segment bytes and state.json open to a typed error or a repaired spool that delivers intact records once, in order', async (t) => {
    const root = await mkdtemp(join(tmpdir(), 'edgetoken-spool-property-'))
    t.after(() => rm(root, { recursive: true, force: true }))
    let run = 0
    await forAll(
      t,
      'spool segments and state',
      spoolDirs,
      async (input) => {
        const stateDir = join(root, `s${run++}`)
        const dir = join(stateDir, 'spool')
        await mkdir(dir, { recursive: true, mode: 0o700 })
        const written: number[] = []
        let n = 0
        let named = true
        const names = new Set<string>()
        for (const seg of input.segments) {
          const { bytes, valid } = buildSegment(seg.pieces, n)
          const name = segmentName(seg.start ?? n)
          if (seg.start !== undefined || names.has(name)) named = false
          names.add(name)
          n += seg.pieces.filter((p) => p.kind !== 'noise' && p.kind !== 'bad-length').length
          written.push(...valid)
          await writeFile(join(dir, name), bytes)
        }
        if (input.state) await writeFile(join(dir, 'state.json'), input.state)
        if (input.drops) await writeFile(join(dir, 'drops.json'), input.drops)
        const warnings: string[] = []
        const opened = await outcome(() => openSpool(stateDir, { onWarning: (l) => warnings.push(l) }))
        if (!opened.ok) return label(opened)
        const spool = opened.value
        const delivered: number[] = []
        try {
          const stats = await outcome(() => spool.stats())
          if (!stats.ok) return `stats ${label(stats)}`
          for (let i = 0; ; i++) {
            assert.ok(i < 200, 'readBatch does not come to an end')
            const batch = await outcome(() => spool.readBatch({ maxRecords: input.maxRecords }))
            if (!batch.ok) return `readBatch ${label(batch)}`
            if (batch.value === undefined) break
            assert.ok(batch.value.records.length > 0 && batch.value.records.length <= input.maxRecords)
            for (const text of batch.value.records) {
              const value: unknown = JSON.parse(text)
              assert.ok(
                isObject(value) && typeof value.n === 'number',
                'a delivered record is not one that was written',
              )
              delivered.push(value.n)
            }
            const acked = await outcome(() => spool.ack(batch.value as NonNullable<typeof batch.value>))
            if (!acked.ok) return `ack ${label(acked)}`
          }
        } finally {
          await spool.close().catch((err: unknown) => assertTypedError(err))
        }
        // Delivered records are intact frames that were written, each once, in spool order
        // (state.json may already have acknowledged some).
        assert.equal(new Set(delivered).size, delivered.length, 'a record was delivered twice')
        for (const d of delivered) assert.ok(written.includes(d), `record ${d} was never written intact`)
        // Reopened, the drained spool needs no second repair and, when its segments carry the
        // names the writer gives them, has nothing pending. (Names planted out of sequence are
        // believed: a sealed segment's count comes from the names alone.)
        const again = await openSpool(stateDir, { onWarning: (l) => warnings.push(`again: ${l}`) })
        try {
          const { pending } = await again.stats()
          if (named) assert.equal(pending, 0, 'records still pending after the spool was drained')
        } finally {
          await again.close()
        }
        assert.ok(!warnings.some((w) => w.startsWith('again: ')), `repaired twice: ${warnings.join(' | ')}`)
        return warnings.length > 0 ? 'repaired and drained' : 'drained'
      },
      { numRuns: 80, timeoutMs: 20_000 },
    )
  })

  test('issue 16 (found by the spool property): damaged records ending a sealed segment are skipped once, then nothing is pending', async (t) => {
    const stateDir = await mkdtemp(join(tmpdir(), 'edgetoken-spool-damaged-sealed-'))
    t.after(() => rm(stateDir, { recursive: true, force: true }))
    const dir = join(stateDir, 'spool')
    await mkdir(dir, { recursive: true, mode: 0o700 })
    const frame = encodeFrame(Buffer.from(recordText(0, 4)))
    frame.writeUInt32LE((frame.readUInt32LE(4) ^ 1) >>> 0, 4) // bit rot in the CRC
    await writeFile(join(dir, segmentName(0)), frame) // sealed: a newer segment follows
    await writeFile(join(dir, segmentName(1)), Buffer.alloc(0))
    for (let run = 1; run <= 2; run++) {
      const spool = await openSpool(stateDir, { onWarning: () => {} })
      try {
        assert.equal(await spool.readBatch(), undefined)
      } finally {
        await spool.close()
      }
      const reopened = await openSpool(stateDir, { onWarning: () => {} })
      try {
        const stats = await reopened.stats()
        assert.equal(stats.pending, 0, `run ${run}: the skipped record is still pending`)
        assert.equal(stats.dropped, 1, `run ${run}: the skipped record is counted as dropped once`)
      } finally {
        await reopened.close()
      }
    }
  })

  test('upload: any answer of the telemetry API is classified; only 400, 413 and 422 dead-letter a batch', async (t) => {
    await forAll(
      t,
      'telemetry API answer',
      fc.tuple(
        httpStatus(),
        responseHeaders(),
        bodyText(mutatedObject({ error: fc.string(), error_description: fc.string() })),
      ),
      async ([status, headers, text]) => {
        const result = await outcome(() =>
          classifyAnswer({ status, headers, text }, 'api.test', () => Date.now()),
        )
        assert.ok(result.ok, 'classifyAnswer throws')
        const answer = result.value
        if (answer.kind === 'dead-letter') {
          assert.ok([400, 413, 422].includes(status))
          assert.ok(!/[^\x20-\x7e]/.test(answer.reason) && answer.reason.length <= 200)
        } else if (answer.kind === 'retry') {
          assertTypedError(answer.error)
          if (answer.retryAfterMs !== undefined)
            assert.ok(Number.isFinite(answer.retryAfterMs) && answer.retryAfterMs >= 0)
        } else {
          assert.ok(status >= 200 && status < 300)
        }
        return answer.kind
      },
      { numRuns: 2000 },
    )
  })
})
