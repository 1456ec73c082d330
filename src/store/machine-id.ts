/**
 * The machine identity the token store is bound to: systemd's `/etc/machine-id`.
 *
 * A cloned SD-card image carries the same store and key file to another board; binding the
 * envelope's additional authenticated data to the machine id makes such a copy fail closed.
 * Images are expected to regenerate `/etc/machine-id` on first boot (systemd-firstboot does).
 *
 * @see https://www.freedesktop.org/software/systemd/man/machine-id.html
 */
import { readFileSync } from 'node:fs'

/** Where the machine id is read from unless told otherwise. */
export const DEFAULT_MACHINE_ID_PATH = '/etc/machine-id'

/**
 * Reads the machine id.
 *
 * @param path - the file to read; default `/etc/machine-id` (tests and containers inject another).
 * @returns the id (trimmed, lower-cased), or undefined when the file is missing, empty or unreadable:
 *   a machine without one simply gets no machine binding.
 */
export function readMachineId(path: string = DEFAULT_MACHINE_ID_PATH): string | undefined {
  try {
    const id = readFileSync(path, 'utf8').trim().toLowerCase()
    return id.length > 0 ? id : undefined
  } catch {
    return undefined
  }
}
