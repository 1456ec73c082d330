/**
 * Names of the temporary files of atomic replaces (`<file>.tmp-<pid>-<random>`), and the sweep of
 * those a killed writer left behind. Separate from ./durable-file.ts so that a reader that only
 * sweeps (the cached `token` path) does not load node:fs/promises.
 *
 * @internal
 */
import { randomBytes } from 'node:crypto'
import { readdirSync, statSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'

/**
 * A fresh temporary file name next to a file, for an exclusive create (`wx`).
 *
 * @param path - the file an atomic replace will write.
 * @returns `<path>.tmp-<pid>-<12 hex digits>`, which {@link sweepTempFiles} recognises.
 */
export function tempFileName(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`
}

/** Options of {@link sweepTempFiles}. */
export interface SweepTempFilesOptions {
  /**
   * Remove only temporaries last modified longer ago than this (default 0: all). For a sweep
   * without the writers' lock: a live writer's temporary is seconds old at most.
   */
  olderThanMs?: number
}

/**
 * Removes temporary files of interrupted writes (`<name>.tmp-…`). Without `olderThanMs`, call it
 * only while holding the lock that serialises the writers of these files, when no other writer
 * can be mid-write.
 *
 * @param dir - the directory.
 * @param names - the base names whose temporaries to remove.
 * @param options - the least age of a temporary to remove.
 * @returns how many files were removed.
 */
export function sweepTempFiles(
  dir: string,
  names: readonly string[],
  options: SweepTempFilesOptions = {},
): number {
  const olderThanMs = options.olderThanMs ?? 0
  let removed = 0
  let entries: string[]
  try {
    entries = readdirSync(dir)
  } catch {
    return 0
  }
  for (const entry of entries) {
    if (!names.some((name) => entry.startsWith(`${name}.tmp-`))) continue
    try {
      const file = join(dir, entry)
      if (olderThanMs > 0 && Date.now() - statSync(file).mtimeMs <= olderThanMs) continue
      unlinkSync(file)
      removed += 1
    } catch {
      // Already gone (another sweeper) or not ours to remove: neither blocks a write.
    }
  }
  return removed
}
