/**
 * Issue 21: the systemd unit bounds V8's heap (old and young generation) through NODE_OPTIONS,
 * chosen by `npm run bench -- soak`. Guards that the flags are there, that node accepts them in
 * NODE_OPTIONS (it refuses most V8 flags there, exit 9), and that they take effect.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const UNIT = fileURLToPath(new URL('../../systemd/edgetoken.service', import.meta.url))
const run = promisify(execFile)

/** The value of the unit's `Environment="NODE_OPTIONS=..."`, or undefined. */
async function unitNodeOptions(): Promise<string | undefined> {
  const text = await readFile(UNIT, 'utf8')
  const line = text.split('\n').find((l) => /^Environment="NODE_OPTIONS=/.test(l))
  return line === undefined ? undefined : /^Environment="NODE_OPTIONS=(.*)"$/.exec(line)?.[1]
}

describe('issue 21: heap limits of the unit', () => {
  test('issue 21: the unit sets --max-old-space-size and --max-semi-space-size in NODE_OPTIONS', async () => {
    const options = await unitNodeOptions()
    assert.ok(options, 'Environment="NODE_OPTIONS=..." (quoted: the value holds spaces)')
    assert.match(options, /(^| )--max-old-space-size=\d+( |$)/)
    assert.match(options, /(^| )--max-semi-space-size=\d+( |$)/)
  })

  test('issue 21: node accepts the flags in NODE_OPTIONS and bounds the heap by them', async () => {
    const options = (await unitNodeOptions()) ?? ''
    const oldMiB = Number(/--max-old-space-size=(\d+)/.exec(options)?.[1])
    const semiMiB = Number(/--max-semi-space-size=(\d+)/.exec(options)?.[1])
    const script = 'process.stdout.write(String(require("node:v8").getHeapStatistics().heap_size_limit))'
    const [bounded, unbounded] = await Promise.all([
      run(process.execPath, ['-e', script], { env: { ...process.env, NODE_OPTIONS: options } }),
      run(process.execPath, ['-e', script], { env: { ...process.env, NODE_OPTIONS: '' } }),
    ])
    const limitMiB = Number(bounded.stdout) / 2 ** 20
    // heap_size_limit = old generation + young generation (three semi-spaces' worth on Node 20-24).
    assert.ok(limitMiB >= oldMiB && limitMiB <= oldMiB + 4 * semiMiB + 1, `heap limit ${limitMiB} MiB`)
    assert.ok(limitMiB < Number(unbounded.stdout) / 2 ** 20, 'below the default limit')
  })
})
