#!/usr/bin/env node
/**
 * The `edgetoken` executable. `npm run build` bundles it, with the cached `token` answer, into one
 * CommonJS file (`dist/cli.js`, see config/bundle-cli.mjs): a CommonJS entry starts ~6 ms sooner
 * than an ES module on Node 20. Everything else loads the full CLI (ES modules in `dist/lib`).
 */
import { writeSync } from 'node:fs'
import { cachedTokenAnswer } from './cli/cached-token.js'

const argv = process.argv.slice(2)

/**
 * Writes to file descriptor 1 directly: creating `process.stdout` loads node's stream modules
 * (~3 ms), which is more than the rest of a cached `token` costs.
 */
function print(text: string): void {
  const bytes = Buffer.from(text)
  let offset = 0
  try {
    while (offset < bytes.length) offset += writeSync(1, bytes, offset)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    // A non-blocking pipe that is full: the stream waits for it to drain.
    if (code === 'EAGAIN') process.stdout.write(bytes.subarray(offset))
    // A closed pipe (`edgetoken token | head -c0`) is not an error, as in the full CLI.
    else if (code !== 'EPIPE') {
      process.stderr.write(`edgetoken: cannot write to stdout (${code ?? 'error'})\n`)
      process.exitCode = 1
    }
  }
}

void cachedTokenAnswer(argv, process.env).then(async (line) => {
  if (line !== undefined) return print(line)
  const { runProcess } = await import('./cli/process.js')
  await runProcess(argv)
})
