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
 *
 * @returns true when it is all written (or cannot be), false when the stdout stream took the rest.
 */
function print(text: string): boolean {
  const bytes = Buffer.from(text)
  let offset = 0
  try {
    while (offset < bytes.length) offset += writeSync(1, bytes, offset)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EAGAIN') {
      // A non-blocking pipe that is full: the stream waits for it to drain.
      process.stdout.write(bytes.subarray(offset))
      return false
    }
    // A closed pipe (`edgetoken token | head -c0`) is not an error, as in the full CLI.
    if (code !== 'EPIPE') {
      process.stderr.write(`edgetoken: cannot write to stdout (${code ?? 'error'})\n`)
      process.exitCode = 1
    }
  }
  return true
}

void cachedTokenAnswer(argv, process.env).then(async (line) => {
  if (line === undefined) {
    const { runProcess } = await import('./cli/process.js')
    return runProcess(argv)
  }
  // Nothing is open and nothing is pending: exiting now skips the environment teardown of a
  // natural exit (~0.5 ms).
  if (print(line)) process.exit()
})
