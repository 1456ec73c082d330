/**
 * File plumbing of the spool directory: I/O error mapping and reading small JSON state files. The
 * durable replace lives in `src/lib/durable-file.ts`, the lock files in `src/lib/file-lock.ts`.
 *
 * @internal
 */
import { readFile } from 'node:fs/promises'
import { EdgeTokenError } from '../errors.js'
import type { AcquireFileLockOptions } from '../lib/file-lock.js'

/**
 * Turns a Node.js file-system error into an `ERR_IO` error with a one-line message naming the
 * operation and the errno code (disk full is spelled out).
 *
 * @param err - what was thrown.
 * @param what - the operation, e.g. `appending to the spool`.
 * @returns the error to throw.
 */
export function ioError(err: unknown, what: string): EdgeTokenError {
  if (err instanceof EdgeTokenError) return err
  const code = (err as NodeJS.ErrnoException | null)?.code
  const why = code === 'ENOSPC' ? 'disk full (ENOSPC)' : (code ?? (err as Error | null)?.message ?? 'error')
  return new EdgeTokenError('ERR_IO', `spool: ${what} failed: ${why}`, { cause: err })
}

/**
 * Reads a small JSON file.
 *
 * @param path - the file.
 * @returns the parsed value, or undefined when the file is missing or not JSON.
 */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}

/**
 * How the spool takes its lock files: give up after 10 s (spool operations are short, except the
 * uploader's, which is taken with `noWait`), and name the spool in the `ERR_IO` errors.
 *
 * @param what - what is locked: `spool`, `spool uploader`.
 * @returns the options for `acquireFileLock` / `withFileLock`.
 */
export function spoolLockOptions(what: string): AcquireFileLockOptions {
  return {
    what,
    timeoutMs: 10_000,
    ioError: (message, cause) =>
      cause === undefined ? new EdgeTokenError('ERR_IO', message) : ioError(cause, `locking the ${what}`),
  }
}
