/**
 * Small tmpfs mounts for fault tests: a state directory that is read-only, or that is full.
 *
 * `chmod 0500` does not stop root, and CI runs as root, so the tests mount instead: a tmpfs of a
 * few hundred KiB (`mount -t tmpfs -o size=…`) that can be filled to ENOSPC, and remounted
 * read-only (`mount -o remount,ro`: EROFS for root too). Mounting needs CAP_SYS_ADMIN; without it
 * {@link mountSupport} says why and the tests skip.
 *
 * Every mount is unmounted (lazily, so an open file cannot keep it) in `t.after`, failure or not.
 */
import { execFileSync } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

let support: string | true | undefined

function mountCmd(args: readonly string[]): void {
  execFileSync('mount', args, { stdio: ['ignore', 'ignore', 'pipe'] })
}

/**
 * Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN), probed once.
 *
 * @returns true, or the reason it may not (for `t.skip`).
 */
export function mountSupport(): true | string {
  if (support !== undefined) return support
  support = probe()
  return support
}

function probe(): true | string {
  if (process.platform !== 'linux') return 'tmpfs mounts need Linux'
  if (process.getuid?.() !== 0) return 'mounting a tmpfs needs root'
  const dir = mkdtempSync(join(tmpdir(), 'edgetoken-mount-probe-'))
  try {
    mountCmd(['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir])
    execFileSync('umount', [dir])
    return true
  } catch (err) {
    return `mount -t tmpfs is not permitted here (${String((err as { stderr?: unknown }).stderr ?? err).trim()})`
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** A mounted tmpfs. */
export interface TestMount {
  /** The mount point. */
  dir: string
  /** Remounts it read-only (EROFS for every writer, root too) or read-write again. */
  remount(mode: 'ro' | 'rw'): void
  /**
   * Fills it up: writes a filler file until ENOSPC, then gives back `leaveBytes` (whole 4 KiB
   * pages: tmpfs counts pages), so that a small write such as a lock's owner file still fits and
   * the next one fails.
   *
   * @param leaveBytes - room to leave, bytes. Default 0 (not even one byte fits).
   * @returns the filler's path; remove it to free the space again.
   */
  fill(leaveBytes?: number): string
  /** Unmounts (lazily) and removes the mount point. Safe to call twice. */
  unmount(): void
}

/**
 * Mounts a tmpfs of `sizeKiB` (mode 0700, owned by this user) on a new temp dir, unmounted in
 * `t.after`.
 *
 * @param t - the test (for `after`).
 * @param sizeKiB - the size; tmpfs rounds it to pages.
 * @returns the mount.
 * @throws when mounting fails (probe with {@link mountSupport} first).
 */
export function mountTmpfs(t: { after: (fn: () => unknown) => void }, sizeKiB: number): TestMount {
  const dir = mkdtempSync(join(tmpdir(), 'edgetoken-tmpfs-'))
  mountCmd(['-t', 'tmpfs', '-o', `size=${sizeKiB}k,mode=0700,nr_inodes=4096`, 'tmpfs', dir])
  let mounted = true
  const mount: TestMount = {
    dir,
    remount(mode) {
      mountCmd(['-o', `remount,${mode}`, dir])
    },
    fill(leaveBytes = 0) {
      const path = join(dir, `filler-${Date.now()}`)
      const fd = openSync(path, 'w')
      const chunk = Buffer.alloc(4096, 0x61)
      try {
        for (;;) writeSync(fd, chunk)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
      } finally {
        closeSync(fd)
      }
      // Partial pages: fill the last bytes too, so even a one-byte write fails.
      const tail = openSync(path, 'a')
      try {
        for (;;) writeSync(tail, Buffer.alloc(1))
      } catch {
        // ENOSPC: full
      } finally {
        closeSync(tail)
      }
      if (leaveBytes > 0) {
        const pages = Math.ceil(leaveBytes / 4096)
        truncateSync(path, Math.max(0, statSync(path).size - (statSync(path).size % 4096) - pages * 4096))
      }
      return path
    },
    unmount() {
      if (!mounted) return
      mounted = false
      try {
        execFileSync('umount', ['-l', dir], { stdio: 'ignore' })
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    },
  }
  t.after(() => mount.unmount())
  return mount
}
