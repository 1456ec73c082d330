import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { type NdjsonItem, readNdjson } from '../../src/telemetry/ndjson.js'

async function collect(chunks: (string | Buffer)[], maxLineBytes?: number): Promise<NdjsonItem[]> {
  async function* source() {
    for (const c of chunks) yield c
  }
  const out: NdjsonItem[] = []
  for await (const item of readNdjson(source(), maxLineBytes === undefined ? {} : { maxLineBytes }))
    out.push(item)
  return out
}

describe('readNdjson', () => {
  test('parses objects across chunk boundaries, with CRLF, a BOM, blank lines and no final newline', async () => {
    const text = '\ufeff{"a":1}\r\n\n  \n{"b":"é"}\n{"c":[1,2]}'
    const bytes = Buffer.from(text, 'utf8')
    // Split inside the multi-byte character and inside a line.
    const items = await collect([bytes.subarray(0, 5), bytes.subarray(5, 21), bytes.subarray(21)])
    assert.deepEqual(items, [
      { line: 1, record: { a: 1 } },
      { line: 4, record: { b: 'é' } },
      { line: 5, record: { c: [1, 2] } },
    ])
  })

  test('names each bad line: not JSON, not an object, too long', async () => {
    const long = `{"x":"${'y'.repeat(200)}"}`
    const items = await collect(['{"ok":1}\nnope\n[1]\n"str"\nnull\n', `${long}\n{"ok":2}\n`], 100)
    assert.deepEqual(items, [
      { line: 1, record: { ok: 1 } },
      { line: 2, error: 'not valid JSON' },
      { line: 3, error: 'not a JSON object' },
      { line: 4, error: 'not a JSON object' },
      { line: 5, error: 'not a JSON object' },
      { line: 6, error: 'longer than 100 bytes' },
      { line: 7, record: { ok: 2 } },
    ])
  })

  test('a huge line is reported once and the next line still parses', async () => {
    const chunk = 'z'.repeat(64 * 1024)
    async function* endless() {
      yield '{"a":"'
      for (let i = 0; i < 200; i++) yield chunk // 12.5 MiB without a newline
      yield '"}\n{"b":1}\n'
    }
    const items: NdjsonItem[] = []
    for await (const item of readNdjson(endless(), { maxLineBytes: 1024 })) items.push(item)
    assert.deepEqual(items, [
      { line: 1, error: 'longer than 1024 bytes' },
      { line: 2, record: { b: 1 } },
    ])
  })

  test('a line of exactly the cap is accepted, one byte more is not', async () => {
    const exact = `{"k":"${'v'.repeat(10 - 8)}"}` // 10 bytes
    assert.equal(Buffer.byteLength(exact), 10)
    const items = await collect([`${exact}\n${exact.replace('"}', 'v"}')}\n`], 10)
    assert.deepEqual(items, [
      { line: 1, record: { k: 'vv' } },
      { line: 2, error: 'longer than 10 bytes' },
    ])
  })

  test('issue 11 #8: a line of 100k "[" is one invalid line; the lines around it are read', async () => {
    const deep = '['.repeat(100_000)
    const items = await collect([`{"a":1}\n${deep}\n{"b":2}\n`], 200_000)
    assert.deepEqual(items, [
      { line: 1, record: { a: 1 } },
      { line: 2, error: 'nested deeper than 64 levels' },
      { line: 3, record: { b: 2 } },
    ])
  })

  test('issue 11 #8: 64 levels pass, 65 do not; brackets inside strings do not count', async () => {
    const nest = (depth: number) => `${'{"a":'.repeat(depth - 1)}{"s":"[[[{{\\"["}${'}'.repeat(depth - 1)}`
    const items = await collect([`${nest(64)}\n${nest(65)}\n`])
    assert.equal('record' in (items[0] as NdjsonItem), true)
    assert.deepEqual(items[1], { line: 2, error: 'nested deeper than 64 levels' })
  })
})
