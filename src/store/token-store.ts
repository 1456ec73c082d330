/**
 * The encrypted token store: one file (`tokens.store`) in the state directory, read and decrypted
 * with node:crypto (cheap enough for the cached `token` path), replaced durably (temporary file,
 * fsync, rename, directory fsync) under a cross-process lock.
 *
 * Why not conf: see the README ("Token store"). In short, importing it (through `atomically` and
 * `when-exit`) re-raises SIGINT/SIGTERM, which turns a graceful stop into an immediate exit; it does
 * not fsync the directory; and its encryption is not the protection we need anyway.
 */
import { createSecretKey, type KeyObject } from 'node:crypto'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { EdgeTokenError, StoreError } from '../errors.js'
import { sweepTempFiles } from '../lib/fs/temp-files.js'
import { isObject, parseJson } from '../lib/validate.js'
import { emptyDocument, isStoreDocument, type StoreDocument, validateDocument } from './document.js'
import { deriveMetadataKey, deriveStoreKeys, type EnvelopeContext, open, seal } from './envelope.js'
import { ensureStateDir, readTextIfExists, storeFsError } from './file.js'
import { type KeySource, loadKeyMaterial, sweepKeyTemporaries } from './keys.js'
import { DEFAULT_MACHINE_ID_PATH, readMachineId } from './machine-id.js'

/** The store file's base name and extension. */
const STORE_NAME = 'tokens'
const STORE_EXTENSION = 'store'
/** The store file's name in the state directory. */
export const STORE_FILE = `${STORE_NAME}.${STORE_EXTENSION}`
/** The lock file's name in the state directory. */
export const LOCK_FILE = 'tokens.lock'
/** The metadata cache's file (`metadata-cache.ts`, not imported here: the cached path skips it). */
const METADATA_NAME = 'metadata.json'
/**
 * A store or metadata temporary this old is a killed writer's leftover: a live writer's is seconds
 * old at most. Younger ones are left to the sweep under the lock (store) or to their writer.
 */
const STALE_TEMP_MS = 60_000

/**
 * Whether a state directory holds a token store file, without opening it (and so without creating
 * a key): `status` and `logout` on a fresh machine must not generate one.
 *
 * @param stateDir - the state directory.
 * @returns true when `tokens.store` exists.
 */
export function tokenStoreExists(stateDir: string): boolean {
  return existsSync(join(stateDir, STORE_FILE))
}

/** Options of {@link openTokenStore}. */
export interface OpenTokenStoreOptions {
  /** The state directory; created with mode 0700 when missing. */
  stateDir: string
  /** The environment: `EDGETOKEN_KEY_FILE`, `CREDENTIALS_DIRECTORY`, `EDGETOKEN_MACHINE_ID_FILE`. */
  env: NodeJS.ProcessEnv
  /** A key file from the configuration (wins over `EDGETOKEN_KEY_FILE`). */
  keyFile?: string | undefined
  /** The machine-id file; default `EDGETOKEN_MACHINE_ID_FILE`, else `/etc/machine-id`. */
  machineIdPath?: string | undefined
  /** Receives one-time warnings (a key file was generated next to the data). */
  onWarning?: ((message: string) => void) | undefined
  /** A lock untouched this long is stale. Default 60 000 ms. */
  lockStaleMs?: number
  /** How long to wait for the lock. Default 90 000 ms. */
  lockTimeoutMs?: number
}

/**
 * How much larger than the current store a reserved write may be (64 KiB): a refresh adds or
 * replaces one access token and the id-token claims, a few KiB even for Entra ID's tokens.
 */
export const STORE_WRITE_RESERVE_BYTES = 64 * 1024

/** Room held on disk for one write of the store; see {@link TokenStore.reserveWrite}. */
export interface StoreWriteReservation {
  /**
   * Durably replaces the document through the reserved file (temporary overwritten from its start
   * and cut to length, fsync, rename, directory fsync). Once only.
   *
   * @param doc - the new document.
   * @returns when it is on disk.
   * @throws as {@link TokenStore.write}.
   */
  write(doc: StoreDocument): Promise<void>
  /**
   * Gives the room back unless written. Idempotent.
   *
   * @returns when the temporary file is removed.
   */
  release(): Promise<void>
}

/** Options of {@link TokenStore.withLock}. */
export interface WithLockOptions {
  /** Stops waiting for the lock. */
  signal?: AbortSignal | undefined
}

/** The opened store. */
export interface TokenStore {
  /** The state directory. */
  readonly stateDir: string
  /** The store file. */
  readonly path: string
  /** Where the key material came from. */
  readonly keySource: KeySource
  /**
   * Reads and decrypts the current document (an empty one when there is no file yet).
   *
   * @throws StoreError (`ERR_STORE_UNREADABLE`) when the file does not open.
   */
  read(): Promise<StoreDocument>
  /**
   * Durably replaces the document: temporary file, fsync, rename, directory fsync. Call it only
   * inside {@link TokenStore.withLock}, after reading. Refuses (StoreError) when the current file
   * does not open, and (ERR_INTERNAL) a document of the wrong shape.
   */
  write(doc: StoreDocument): Promise<void>
  /**
   * Reserves room on disk for the next write, before a request whose answer must be saved (a
   * refresh grant: the IdP spends the old refresh token once it answers). The temporary file the
   * write will use is created, filled to the current store's size plus {@link STORE_WRITE_RESERVE_BYTES}
   * and fsynced; the write then goes into those blocks. Call it only inside
   * {@link TokenStore.withLock}. Optional: a store without it is written with {@link TokenStore.write}.
   *
   * @returns the reservation: `write(doc)` saves through it (as {@link TokenStore.write}, once),
   *   `release()` gives the room back and must follow whatever happens.
   * @throws StoreError `ERR_IO` (exit 1) when the disk is full (ENOSPC, EDQUOT, EFBIG), another
   *   StoreError when the state directory cannot be written: send no request then.
   */
  reserveWrite?(): Promise<StoreWriteReservation>
  /**
   * Runs `fn` holding the store lock: first in this process (callers queue), then across processes.
   * Re-read the store inside: another process may have changed it while this one waited.
   *
   * @throws StoreError `ERR_UNAVAILABLE` (exit 5) when another live process holds the lock past
   *   the timeout; `ERR_STORE_UNREADABLE` (exit 6) when the lock cannot be created (EACCES...).
   */
  withLock<T>(fn: () => Promise<T>, options?: WithLockOptions): Promise<T>
  /**
   * The key that authenticates the discovery cache (`fileMetadataCache(stateDir, { key })`),
   * derived with HKDF from this store's key material on first call (the cached `token` path never
   * pays for it).
   *
   * @returns an HMAC-SHA256 key.
   */
  metadataKey(): KeyObject
}

// Loaded on first use (the cached `token` path only reads, and skips node:fs/promises and the
// lock), then kept: an `await import()` per write or lock is a module-map lookup and a few
// microtasks each time.
let durableFile: typeof import('../lib/fs/durable-file.js') | undefined
let fileLock: typeof import('../lib/fs/file-lock.js') | undefined

class FileTokenStore implements TokenStore {
  readonly stateDir: string
  readonly path: string
  readonly keySource: KeySource
  readonly #context: EnvelopeContext
  readonly #lockPath: string
  readonly #lockStaleMs: number | undefined
  readonly #lockTimeoutMs: number | undefined
  readonly #material: KeyObject
  #metadataKey: KeyObject | undefined
  #swept = false

  constructor(
    options: OpenTokenStoreOptions,
    keySource: KeySource,
    context: EnvelopeContext,
    material: KeyObject,
  ) {
    this.stateDir = options.stateDir
    this.path = context.path
    this.keySource = keySource
    this.#context = context
    this.#material = material
    this.#lockPath = join(options.stateDir, LOCK_FILE)
    this.#lockStaleMs = options.lockStaleMs
    this.#lockTimeoutMs = options.lockTimeoutMs
  }

  #deserialize = (text: string): StoreDocument => {
    const plain = parseJson(open(text, this.#context))
    if (!isObject(plain))
      throw new StoreError(`token store ${this.path} holds a document this version cannot read`)
    return validateDocument(plain, this.path)
  }

  #serialize = (doc: StoreDocument): string => seal(JSON.stringify(doc), this.#context)

  async read(): Promise<StoreDocument> {
    const text = readTextIfExists(this.path)
    return text === undefined ? emptyDocument() : this.#deserialize(text)
  }

  async write(doc: StoreDocument): Promise<void> {
    const data = await this.#checkedData(doc)
    durableFile ??= await import('../lib/fs/durable-file.js')
    const { writeFileAtomic } = durableFile
    try {
      await writeFileAtomic(this.path, data)
    } catch (err) {
      throw storeFsError(`token store ${this.path} cannot be written`, err)
    }
  }

  async #checkedData(doc: StoreDocument): Promise<string> {
    if (!isStoreDocument(doc))
      throw new EdgeTokenError('ERR_INTERNAL', 'refusing to write a malformed token store')
    // Never replace a store that does not open: that would be the silent reset we promise not to do.
    await this.read()
    return this.#serialize(doc)
  }

  async reserveWrite(): Promise<StoreWriteReservation> {
    durableFile ??= await import('../lib/fs/durable-file.js')
    const { reserveFileReplace } = durableFile
    let room: Awaited<ReturnType<typeof reserveFileReplace>>
    try {
      let current = 0
      try {
        current = statSync(this.path).size
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
      room = await reserveFileReplace(this.path, current + STORE_WRITE_RESERVE_BYTES)
    } catch (err) {
      const mapped = storeFsError(`token store ${this.path} cannot be written`, err)
      const code = (err as NodeJS.ErrnoException).code ?? 'error'
      throw new StoreError(
        mapped.code === 'ERR_IO'
          ? `token store ${this.path} has no room for a refreshed token (${code}): no refresh was sent and the refresh token is kept; free disk space and retry`
          : `token store ${this.path} cannot be written (${code}): no refresh was sent and the refresh token is kept`,
        { code: mapped.code, cause: err },
      )
    }
    return {
      write: async (doc) => {
        const data = await this.#checkedData(doc)
        try {
          await room.commit(data)
        } catch (err) {
          throw storeFsError(`token store ${this.path} cannot be written`, err)
        }
      },
      release: () => room.release(),
    }
  }

  metadataKey(): KeyObject {
    this.#metadataKey ??= deriveMetadataKey(this.#material)
    return this.#metadataKey
  }

  async withLock<T>(fn: () => Promise<T>, options: WithLockOptions = {}): Promise<T> {
    fileLock ??= await import('../lib/fs/file-lock.js')
    const { withFileLock } = fileLock
    const lockOptions = {
      what: 'token store',
      staleMs: this.#lockStaleMs,
      timeoutMs: this.#lockTimeoutMs,
      signal: options.signal,
      ioError: (message: string, cause?: unknown) =>
        cause === undefined
          ? new StoreError(message, { code: 'ERR_IO' })
          : storeFsError(`token store lock ${this.#lockPath} cannot be created`, cause),
      // Another live process is working on the store (a refresh cannot take 90 s unless the IdP
      // hangs): transient and local, so "unavailable, try again later" (exit 5), not a bug (exit 1).
      busyError: (message: string) => new StoreError(message, { code: 'ERR_UNAVAILABLE' }),
    }
    return withFileLock(this.#lockPath, lockOptions, async () => {
      if (!this.#swept) {
        // Leftovers of writers killed mid-write; safe to remove now that no one else can write.
        // (The lock sweeps its own.)
        sweepTempFiles(this.stateDir, [STORE_FILE])
        this.#swept = true
      }
      return await fn()
    })
  }
}

/**
 * Opens the token store in a state directory: creates the directory (0700), finds or generates the
 * key material, derives the keys and reads the machine id. Reads no token yet.
 *
 * @param options - state directory, environment, key file, machine-id file, warning sink.
 * @returns the store.
 * @throws ConfigError (exit 2) for a bad configured key file or a shared, foreign or symlinked
 *   state directory; StoreError (exit 6) for a missing or damaged generated key or an unusable
 *   state directory (`ERR_IO`, exit 1, when the disk is full).
 * @example
 * ```ts
 * const store = await openTokenStore({ stateDir, env: process.env, onWarning: console.warn })
 * const doc = await store.read()
 * ```
 */
export async function openTokenStore(options: OpenTokenStoreOptions): Promise<TokenStore> {
  ensureStateDir(options.stateDir)
  // Leftovers of writers killed mid-write, some of them copies of the key material.
  sweepTempFiles(options.stateDir, [STORE_FILE, METADATA_NAME], { olderThanMs: STALE_TEMP_MS })
  sweepKeyTemporaries(options.stateDir)
  const path = join(options.stateDir, STORE_FILE)
  const key = loadKeyMaterial({
    stateDir: options.stateDir,
    env: options.env,
    keyFile: options.keyFile,
    storeExists: existsSync(path),
    onWarning: options.onWarning,
  })
  const keys = deriveStoreKeys(key.material)
  const material = createSecretKey(key.material)
  key.material.fill(0)
  const machineIdPath =
    options.machineIdPath ?? (options.env.EDGETOKEN_MACHINE_ID_FILE || DEFAULT_MACHINE_ID_PATH)
  const context: EnvelopeContext = { keys, machineId: readMachineId(machineIdPath), path }
  return new FileTokenStore(options, key.source, context, material)
}
