/**
 * The atomic (and by default durable) whole-file replace shared by the token store and the
 * telemetry spool, with the directory fsync. The sweep of temporaries a killed writer left is in
 * ./temp-files.ts (the cached `token` path sweeps but never writes, and skips this module).
 *
 * A durable replace is: write a temporary file, fsync it, rename it over the target, then fsync the
 * directory so the rename itself survives a power cut. A reader sees the old file or the new one,
 * never a mix, whenever the writer is killed.
 *
 * @internal
 */
import { closeSync, fsyncSync, openSync } from 'node:fs'
import { type FileHandle, open, rename, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import { tempFileName } from './temp-files.js'

/**
 * Fsyncs a directory, so a created, renamed or deleted entry in it survives power loss.
 *
 * @param dir - the directory.
 * @returns when the directory is on disk.
 */
export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * {@link fsyncDirectory} for synchronous callers (the key file is created synchronously).
 *
 * @param dir - the directory.
 */
export function fsyncDirectorySync(dir: string): void {
  const fd = openSync(dir, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/**
 * How {@link writeFileAtomic} and {@link reserveFileReplace} create their temporary files: a seam
 * for tests, which hand out handles whose writes fail (ENOSPC) to play a full disk.
 *
 * @internal
 */
export const durableFileIo = {
  /** Creates a temporary file exclusively, mode 0600. */
  open: (path: string): Promise<FileHandle> => open(path, 'wx', 0o600),
}

/** Options of {@link writeFileAtomic}. */
export interface WriteFileAtomicOptions {
  /**
   * Fsync the file and the directory (default true). `false` keeps the atomicity but not the
   * durability, for a file whose loss on a power cut costs nothing (a cache, an informational
   * field): each fsync is costly on SD cards.
   */
  durable?: boolean
}

/**
 * Replaces a file atomically, and durably unless told otherwise: temporary file (`<path>.tmp-…`,
 * mode 0600, created exclusively), fsync, rename over the target, fsync of the directory.
 *
 * @param path - the file to replace.
 * @param data - its new content.
 * @param options - whether to fsync.
 * @returns when the file is replaced (and on disk).
 * @throws the file-system error, unmapped (callers name the file); the temporary file is removed
 *   whenever the rename did not happen.
 * @example
 * ```ts
 * await writeFileAtomic(join(dir, 'state.json'), `${JSON.stringify(state)}\n`)
 * ```
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: WriteFileAtomicOptions = {},
): Promise<void> {
  const durable = options.durable ?? true
  const temp = tempFileName(path)
  let renamed = false
  try {
    const handle = await durableFileIo.open(temp)
    try {
      await handle.writeFile(data)
      if (durable) await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temp, path)
    renamed = true
    if (durable) await fsyncDirectory(dirname(path))
  } finally {
    if (!renamed) await unlink(temp).catch(() => {})
  }
}

/** Room on disk held for one atomic, durable replace; see {@link reserveFileReplace}. */
export interface ReservedReplace {
  /**
   * Replaces the file with `data` through the reserved temporary: written from offset 0, cut to its
   * length, fsynced, renamed over the target, directory fsynced. Once only.
   *
   * @param data - the new content.
   * @returns when the file is replaced and on disk.
   * @throws the file-system error, unmapped; the temporary is removed when the rename did not happen.
   */
  commit(data: string | Uint8Array): Promise<void>
  /**
   * Gives the room back (removes the temporary) unless committed. Idempotent.
   *
   * @returns when the temporary is gone.
   */
  release(): Promise<void>
}

async function writeAllAt(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done)
    done += bytesWritten
  }
}

/**
 * Reserves the room a later replace of `path` needs, before doing something whose result must be
 * saved (a refresh grant that rotates the refresh token): creates the temporary file, writes
 * `bytes` zero bytes into it and fsyncs it, so the blocks are allocated now. A full disk then fails
 * here, before the request, instead of at the save, after the IdP has spent the old token.
 *
 * Writing in place into allocated blocks needs no new ones on ext4, tmpfs and the like; on
 * copy-on-write and log-structured file systems (btrfs, ZFS, f2fs) an overwrite allocates anew, so
 * there the reservation only shows the room was there a moment ago.
 *
 * @param path - the file a later {@link ReservedReplace.commit} replaces.
 * @param bytes - how much room to hold: at least the size of the content to come.
 * @returns the reservation; call `commit` or `release`.
 * @throws the file-system error, unmapped (ENOSPC, EDQUOT, EFBIG, EIO...); nothing is left behind.
 * @example
 * ```ts
 * const room = await reserveFileReplace(file, size + 65536)
 * try { await room.commit(await work()) } finally { await room.release() }
 * ```
 */
export async function reserveFileReplace(path: string, bytes: number): Promise<ReservedReplace> {
  const temp = tempFileName(path)
  let handle: FileHandle | undefined = await durableFileIo.open(temp)
  try {
    await writeAllAt(handle, new Uint8Array(bytes), 0)
    await handle.sync()
  } catch (err) {
    await handle.close().catch(() => {})
    await unlink(temp).catch(() => {})
    throw err
  }
  let settled = false
  const close = async (): Promise<void> => {
    const current = handle
    handle = undefined
    await current?.close()
  }
  return {
    async commit(data) {
      if (settled) throw new TypeError('a reservation is committed or released once')
      settled = true
      const bytes = typeof data === 'string' ? Buffer.from(data) : data
      let renamed = false
      try {
        if (handle === undefined) throw new TypeError('a reservation is committed or released once')
        await writeAllAt(handle, bytes, 0)
        await handle.truncate(bytes.length)
        await handle.sync()
        await close()
        try {
          await rename(temp, path)
        } catch (err) {
          // Swept as a killed writer's leftover by a process that opened the store meanwhile (the
          // request outlived the sweep's age bound): the room went with it; write the usual way.
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
          await writeFileAtomic(path, bytes)
          return
        }
        renamed = true
        await fsyncDirectory(dirname(path))
      } finally {
        if (!renamed) {
          await close().catch(() => {})
          await unlink(temp).catch(() => {})
        }
      }
    },
    async release() {
      if (settled) return
      settled = true
      await close().catch(() => {})
      await unlink(temp).catch(() => {})
    },
  }
}
