/**
 * Where the token store's key material comes from, in order:
 * 1. `EDGETOKEN_KEY_FILE` (or the `keyFile` option): a file with at least 32 bytes;
 * 2. `$CREDENTIALS_DIRECTORY/edgetoken.key`: a systemd credential (`LoadCredential=`,
 *    `LoadCredentialEncrypted=`);
 * 3. `store.key` in the state directory, generated on first use (mode 0600) with a one-time warning:
 *    a key next to the data only protects against other local users, not against whoever copies
 *    the directory.
 *
 * The bytes are key *material*: the envelope derives its keys from them with HKDF.
 */
import { randomBytes } from 'node:crypto'
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  linkSync,
  openSync,
  readFileSync,
  unlinkSync,
  writeSync,
} from 'node:fs'
import { join, resolve } from 'node:path'
import { ConfigError, StoreError } from '../errors.js'
import { sweepTempFiles, tempFileName } from '../lib/fs/temp-files.js'
import { fsyncDirectory, storeFsError } from './file.js'

/** The least number of bytes of key material accepted. */
export const MIN_KEY_BYTES = 32
/** The generated key file's name inside the state directory. */
export const GENERATED_KEY_NAME = 'store.key'
/** The systemd credential's name. */
export const CREDENTIAL_NAME = 'edgetoken.key'

/** Where the key material was found. */
export type KeySource = 'key-file' | 'credential' | 'generated'

/** Options of {@link loadKeyMaterial}. */
export interface LoadKeyMaterialOptions {
  /** The state directory (already created). */
  stateDir: string
  /** The environment (`EDGETOKEN_KEY_FILE`, `CREDENTIALS_DIRECTORY`). */
  env: NodeJS.ProcessEnv
  /** A key file from the configuration; wins over the environment. */
  keyFile?: string | undefined
  /** Whether a store file already exists: then a missing generated key is an error, not a new key. */
  storeExists: boolean
  /** Called once, by the process that generates the key file. */
  onWarning?: ((message: string) => void) | undefined
}

/** Key material and where it came from. */
export interface KeyMaterial {
  /** At least {@link MIN_KEY_BYTES} bytes. Secret. */
  readonly material: Buffer
  /** Which source supplied it. */
  readonly source: KeySource
  /** The file it was read from. */
  readonly path: string
}

/** A generation temporary younger than this may belong to a process generating the key now. */
const KEY_TEMP_GRACE_MS = 5_000
/** Key files already warned about in this process (warn once, as ssh does). */
const warnedOpen = new Set<string>()

function readConfiguredKey(
  path: string,
  what: string,
  onWarning: ((message: string) => void) | undefined,
): Buffer {
  let bytes: Buffer
  try {
    const fd = openSync(path, 'r')
    try {
      const mode = fstatSync(fd).mode
      if ((mode & 0o077) !== 0 && !warnedOpen.has(path)) {
        warnedOpen.add(path)
        onWarning?.(
          `key file ${path} is accessible by others (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); ` +
            `restrict it with chmod 600 ${path}`,
        )
      }
      bytes = readFileSync(fd)
    } finally {
      closeSync(fd)
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    throw new ConfigError(`${what}: cannot read key file ${path} (${code})`, { key: what, cause: err })
  }
  if (bytes.length < MIN_KEY_BYTES) {
    throw new ConfigError(
      `${what}: key file ${path} holds ${bytes.length} bytes; at least ${MIN_KEY_BYTES} are needed`,
      { key: what },
    )
  }
  return bytes
}

/**
 * Finds (or, on first use, generates) the store's key material.
 *
 * @param options - state directory, environment, configured key file, warning sink.
 * @returns the material and its source.
 * @throws ConfigError (exit 2) when a configured key file is missing, unreadable or shorter than 32 bytes.
 * @throws StoreError (exit 6) when the generated key is gone or damaged while a store exists.
 */
export function loadKeyMaterial(options: LoadKeyMaterialOptions): KeyMaterial {
  const configured = options.keyFile ?? options.env.EDGETOKEN_KEY_FILE
  if (configured !== undefined && configured !== '') {
    const path = resolve(configured)
    const what = options.keyFile !== undefined ? 'keyFile (EDGETOKEN_KEY_FILE)' : 'EDGETOKEN_KEY_FILE'
    return { material: readConfiguredKey(path, what, options.onWarning), source: 'key-file', path }
  }
  const credentials = options.env.CREDENTIALS_DIRECTORY
  if (credentials) {
    const path = join(credentials, CREDENTIAL_NAME)
    if (existsSync(path))
      return {
        material: readConfiguredKey(path, 'CREDENTIALS_DIRECTORY', options.onWarning),
        source: 'credential',
        path,
      }
  }
  return generatedKey(options)
}

function generatedKey(options: LoadKeyMaterialOptions): KeyMaterial {
  const path = join(options.stateDir, GENERATED_KEY_NAME)
  const existing = readGenerated(path)
  if (existing) return { material: existing, source: 'generated', path }
  if (options.storeExists) {
    // A new key cannot open the old store; generating one would only hide what happened.
    throw new StoreError(`key file ${path} is missing but the token store exists; the store cannot be opened`)
  }
  // Written whole to a private temporary name, then linked into place: link() fails if another
  // process won the race, and nobody ever sees a half-written key.
  const temp = tempFileName(path)
  let created = false
  try {
    const fd = openSync(temp, 'wx', 0o600)
    try {
      writeSync(fd, randomBytes(MIN_KEY_BYTES))
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    try {
      linkSync(temp, path)
      created = true
    } catch (err) {
      // EEXIST: another process won the race. ENOENT: it won and, opening, swept our temporary.
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'EEXIST' && code !== 'ENOENT') throw err
    }
    fsyncDirectory(options.stateDir)
  } catch (err) {
    throw storeFsError(`key file ${path} cannot be created`, err)
  } finally {
    try {
      unlinkSync(temp)
    } catch {
      // Already swept by another process.
    }
  }
  if (created) {
    options.onWarning?.(
      `generated a token store key at ${path}: a key next to the data protects only against other users; ` +
        'set EDGETOKEN_KEY_FILE or a systemd credential (edgetoken.key) for more',
    )
  }
  const material = readGenerated(path)
  if (!material) throw new StoreError(`key file ${path} could not be created`)
  return { material, source: 'generated', path }
}

/**
 * Removes the temporaries of a key generation that was killed (`store.key.tmp-…`, each a copy of
 * key material): all of them once the key file exists (its generation is over), else those older
 * than a few seconds.
 *
 * @param stateDir - the state directory.
 */
export function sweepKeyTemporaries(stateDir: string): void {
  const keyExists = existsSync(join(stateDir, GENERATED_KEY_NAME))
  sweepTempFiles(stateDir, [GENERATED_KEY_NAME], { olderThanMs: keyExists ? 0 : KEY_TEMP_GRACE_MS })
}

function readGenerated(path: string): Buffer | undefined {
  let bytes: Buffer
  try {
    bytes = readFileSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new StoreError(
      `key file ${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
      {
        cause: err,
      },
    )
  }
  if (bytes.length < MIN_KEY_BYTES) throw new StoreError(`key file ${path} is damaged (too short)`)
  return bytes
}
