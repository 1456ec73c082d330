/**
 * Opening and examining files without following symbolic links, for directories that other code
 * (a root-run `edgetoken send`) writes into: a link planted there must make the operation fail,
 * never redirect a write, truncate or read to the file it points at.
 *
 * `O_NOFOLLOW` refuses a link in the last path component (ELOOP); the directories above are checked
 * by their owners (the state and spool directory checks). After opening, the handle is checked to be
 * a regular file (`EFTYPE` otherwise), and `O_NONBLOCK` keeps a FIFO planted under a file's name from
 * blocking the open.
 *
 * @internal
 */
import { constants } from 'node:fs'
import { type FileHandle, lstat, open } from 'node:fs/promises'

const { O_RDONLY, O_RDWR, O_WRONLY, O_CREAT, O_EXCL, O_APPEND, O_NONBLOCK } = constants
// Undefined on Windows, where links are not a concern of this project (Linux gateways).
const O_NOFOLLOW = constants.O_NOFOLLOW ?? 0

/** How {@link openNoFollow} opens: read, read-write, append (created), create exclusively. */
export type NoFollowMode = 'read' | 'update' | 'append' | 'create'

const FLAGS: Readonly<Record<NoFollowMode, number>> = {
  read: O_RDONLY,
  update: O_RDWR,
  append: O_WRONLY | O_APPEND | O_CREAT,
  create: O_RDWR | O_CREAT | O_EXCL,
}

/**
 * The error for a path that is there but is not a regular file (a directory, FIFO, socket or
 * device under a file's name). Code `EFTYPE`, like libuv's "inappropriate file type".
 *
 * @param path - the path.
 * @returns an Error with `code` and `path`, shaped like Node's file-system errors.
 */
export function notRegularFileError(path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`EFTYPE: not a regular file, open '${path}'`), { code: 'EFTYPE', path })
}

/**
 * Opens a regular file without following a symbolic link in its last component.
 *
 * @param path - the file.
 * @param mode - `read` (O_RDONLY), `update` (O_RDWR), `append` (O_WRONLY|O_APPEND|O_CREAT) or
 *   `create` (O_RDWR|O_CREAT|O_EXCL).
 * @param fileMode - permissions of a created file. Default 0o600.
 * @returns the open handle.
 * @throws the file-system error, unmapped: `ELOOP` for a symbolic link, `EFTYPE` for anything but
 *   a regular file, `ENOENT`, `EEXIST`...
 * @example
 * ```ts
 * const handle = await openNoFollow(join(spoolDir, name), 'update')
 * ```
 */
export async function openNoFollow(path: string, mode: NoFollowMode, fileMode = 0o600): Promise<FileHandle> {
  const handle = await open(path, FLAGS[mode] | O_NOFOLLOW | O_NONBLOCK, fileMode)
  try {
    if (!(await handle.stat()).isFile()) throw notRegularFileError(path)
  } catch (err) {
    await handle.close().catch(() => {})
    throw err
  }
  return handle
}

/**
 * Reads a small file as UTF-8 without following a symbolic link.
 *
 * @param path - the file.
 * @returns its text, or undefined when it does not exist.
 * @throws the file-system error (`ELOOP`, `EFTYPE`, `EACCES`...), unmapped.
 */
export async function readTextNoFollow(path: string): Promise<string | undefined> {
  let handle: FileHandle
  try {
    handle = await openNoFollow(path, 'read')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    return await handle.readFile('utf8')
  } finally {
    await handle.close()
  }
}

/**
 * The size of a regular file, by `lstat` (a link is refused, not measured through).
 *
 * @param path - the file.
 * @returns its size in bytes, or undefined when it does not exist.
 * @throws `ELOOP` for a symbolic link, `EFTYPE` for anything else but a regular file.
 */
export async function regularFileSize(path: string): Promise<number | undefined> {
  let stats: Awaited<ReturnType<typeof lstat>>
  try {
    stats = await lstat(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  if (stats.isSymbolicLink()) {
    throw Object.assign(new Error(`ELOOP: symbolic link, lstat '${path}'`), { code: 'ELOOP', path })
  }
  if (!stats.isFile()) throw notRegularFileError(path)
  return stats.size
}
