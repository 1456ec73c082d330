/**
 * {@link RedisTokenCache}: token cache partitions in Redis, shared by the instances of a web app
 * behind a load balancer (issue 18).
 *
 * One Redis key per partition, `namespace + partitionKey`, holding `<version>.<sealed>`: a random
 * version (compare-and-set) and the partition encrypted with the app's key (`seal.ts`; MSAL's
 * distributed cache stores it in clear). A put is one Lua script: compare the version, `SET … PXAT
 * expiresAt`, add the key to an index set of its `<app>/<kind>/` prefix (for `list`). Scripts run
 * atomically, so two instances refreshing one user cannot both win (the loser re-reads and uses
 * the winner's tokens instead of spending the same rotated refresh token).
 *
 * Redis down or slow is `ERR_CACHE_UNAVAILABLE` within `timeoutMs`, never a hang: the client is
 * made with `disableOfflineQueue` (commands fail at once while disconnected) and reconnects in
 * the background with back-off. Meanwhile `get` serves this process's last copy of a partition,
 * marked `stale`, so users whose access tokens are still valid keep being served.
 *
 * The `redis` package (an optional peer dependency) is imported on first use, never by
 * `import 'edgetoken'`. Standalone Redis (or a primary): the scripts touch several keys, which
 * Redis Cluster would refuse across slots.
 *
 * @packageDocumentation
 */
import { randomBytes } from 'node:crypto'
import { ConfigError, EdgeTokenError } from '../../errors.js'
import { createPartitionSealer, type PartitionSealer } from './seal.js'
import type { CachePartition, PutOptions, TokenCache, VersionedPartition } from './token-cache.js'

/**
 * The part of a node-redis v5/v6 client (`createClient()` of the `redis` package) this cache
 * uses. A client the app made is used as it is; give it `disableOfflineQueue: true` so commands
 * fail fast while Redis is down (they are bounded by `timeoutMs` either way).
 */
export interface RedisClientLike {
  /** Whether `connect()` was called and the client was not closed since. */
  readonly isOpen: boolean
  /** Whether the connection is up. */
  readonly isReady: boolean
  /** Connects; resolves once connected. */
  connect(): Promise<unknown>
  /** `GET key`. */
  get(key: string): Promise<unknown>
  /** `EVAL script numkeys keys… args…`. */
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>
  /** Adds an event listener (`error`, `ready`). */
  on(event: string, listener: (arg?: unknown) => void): unknown
  /** Removes an event listener. */
  off(event: string, listener: (arg?: unknown) => void): unknown
  /** Waits for pending replies, then disconnects (v5+). */
  close?(): Promise<unknown>
  /** Disconnects at once. */
  destroy?(): unknown
}

/** Options of {@link RedisTokenCache}. */
export interface RedisTokenCacheOptions {
  /**
   * The app's 32-byte key, as bytes or base64url text (43 characters). Every instance sharing the
   * cache needs the same key; keep it out of Redis. Secret.
   */
  readonly key: Uint8Array | string
  /**
   * `redis://[user:password@]host[:port][/db]` or `rediss://…` (TLS). The `redis` package is
   * imported on first use. Give `url` or `client`, not both.
   */
  readonly url?: string | undefined
  /** A node-redis v5/v6 client the app made (connected or not); {@link RedisTokenCache.close} leaves it open. */
  readonly client?: RedisClientLike | undefined
  /** Prefix of every Redis key this cache writes. Default `edgetoken:`. */
  readonly namespace?: string | undefined
  /** Bound on every operation, connecting included, in milliseconds. Default 1000. */
  readonly timeoutMs?: number | undefined
  /** How many partitions' last copies to keep for reads while Redis is unreachable. Default 1000; 0 keeps none. */
  readonly localCopies?: number | undefined
}

/** Compare-and-set, write, index; and now and then drop an index member whose key expired. */
const PUT_SCRIPT = `
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == 'absent' then
  if cur then return 0 end
elseif ARGV[1] == 'match' then
  if not cur then return 0 end
  local dot = string.find(cur, '.', 1, true)
  if not dot or string.sub(cur, 1, dot - 1) ~= ARGV[2] then return 0 end
end
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PXAT', ARGV[4])
end
redis.call('SADD', KEYS[2], ARGV[5])
for _, m in ipairs(redis.call('SRANDMEMBER', KEYS[2], 2)) do
  if redis.call('EXISTS', ARGV[6] .. m) == 0 then redis.call('SREM', KEYS[2], m) end
end
return 1
`
const DELETE_SCRIPT = `
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
`
const LIST_SCRIPT = `
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. m) == 1 then
    out[#out + 1] = m
  else
    redis.call('SREM', KEYS[1], m)
  end
end
return out
`

const DEFAULT_NAMESPACE = 'edgetoken:'
const DEFAULT_TIMEOUT_MS = 1000
const DEFAULT_LOCAL_COPIES = 1000
const RECONNECT_FIRST_MS = 50
const RECONNECT_MAX_MS = 1000

interface LocalCopy {
  readonly value: CachePartition
  readonly version: string
  /** The Redis value it came from (a read of the same bytes needs no decryption). */
  readonly raw: string | undefined
  readonly expiresAt: number | undefined
}

/** Rejection of an operation that ran out of time. */
const TIMED_OUT = Symbol('timed out')

/**
 * A {@link TokenCache} in Redis for web apps on several instances: one key per partition,
 * AES-256-GCM encrypted with the app's key, TTL from `expiresAt`, compare-and-set by a Lua script.
 *
 * @example
 * ```ts
 * const cache = new RedisTokenCache({ url: process.env.REDIS_URL, key: process.env.TOKEN_CACHE_KEY! })
 * const client = new ConfidentialClient({ ...options, cache })
 * // at shutdown
 * await cache.close()
 * ```
 */
export class RedisTokenCache implements TokenCache {
  readonly #sealer: PartitionSealer
  readonly #url: string | undefined
  readonly #given: RedisClientLike | undefined
  readonly #namespace: string
  readonly #timeoutMs: number
  readonly #maxCopies: number
  readonly #copies = new Map<string, LocalCopy>()
  /** `redis://host:port`, never credentials: what error messages name. */
  readonly #label: string
  #client: Promise<RedisClientLike> | undefined
  /** The first connection attempt, awaited (within the deadline) until it settles or times out once. */
  #firstConnect: Promise<void> | undefined
  /** The last error the client reported (its socket's errno), cleared when connected. */
  #lastError: unknown
  #closed = false
  readonly #onError = (err?: unknown): void => {
    this.#lastError = err
  }
  readonly #onReady = (): void => {
    this.#lastError = undefined
  }

  /**
   * @param options - the key and a `url` or a `client`; see {@link RedisTokenCacheOptions}.
   * @throws ConfigError when the key is not 32 bytes, neither or both of `url` and `client` are
   *   given, the url is not `redis://` or `rediss://`, or a number is out of range.
   */
  constructor(options: RedisTokenCacheOptions) {
    const { url, client } = options
    if ((url === undefined) === (client === undefined)) {
      throw new ConfigError('RedisTokenCache needs either a url or a client (not both)', { key: 'url' })
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) {
      throw new ConfigError('RedisTokenCache timeoutMs must be a positive integer (milliseconds)', {
        key: 'timeoutMs',
      })
    }
    const copies = options.localCopies ?? DEFAULT_LOCAL_COPIES
    if (!Number.isSafeInteger(copies) || copies < 0) {
      throw new ConfigError('RedisTokenCache localCopies must be an integer >= 0', { key: 'localCopies' })
    }
    const namespace = options.namespace ?? DEFAULT_NAMESPACE
    if (typeof namespace !== 'string') {
      throw new ConfigError('RedisTokenCache namespace must be a string', { key: 'namespace' })
    }
    this.#label = url === undefined ? clientLabel(client) : urlLabel(url)
    this.#sealer = createPartitionSealer(options.key)
    this.#url = url
    this.#given = client
    this.#namespace = namespace
    this.#timeoutMs = timeoutMs
    this.#maxCopies = copies
  }

  /**
   * Connects (creating the client from `url` on the first call). Optional: the first operation
   * connects too; calling it at start-up reports a wrong url or a Redis that is down early.
   * Idempotent. When it fails, the client keeps reconnecting in the background.
   *
   * @returns once connected.
   * @throws `ERR_CACHE_UNAVAILABLE` when Redis cannot be reached within `timeoutMs`;
   *   ConfigError when the `redis` package is not installed.
   */
  async connect(): Promise<void> {
    await this.#run(async (client) => {
      const first = this.#firstConnect
      if (!client.isReady && first) await first
      if (!client.isReady) throw this.#lastError ?? new Error('not connected')
    })
  }

  /**
   * Disconnects the client this cache made from `url` (an app's own client stays open: only the
   * listeners added here are removed). Later operations throw `ERR_CACHE_UNAVAILABLE`.
   *
   * @returns once disconnected.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#copies.clear()
    const pending = this.#client
    if (!pending) return
    const client = await pending.catch(() => undefined)
    if (!client) return
    if (this.#given === undefined && client.isOpen) {
      // close() waits for pending replies, which a hung Redis never sends: bounded, then destroy.
      if (client.isReady && client.close) {
        let timer: ReturnType<typeof setTimeout> | undefined
        const waited = new Promise<void>((resolve) => {
          timer = setTimeout(resolve, this.#timeoutMs)
        })
        await Promise.race([client.close().catch(() => {}), waited])
        clearTimeout(timer)
      }
      if (client.isOpen) client.destroy?.()
    }
    client.off('error', this.#onError)
    client.off('ready', this.#onReady)
  }

  /**
   * Reads a partition. While Redis cannot be reached, returns this process's last copy of it
   * (read or written within the last `localCopies` partitions) with `stale` set to the error.
   *
   * @param key - the partition key.
   * @returns the partition and its version, or undefined.
   * @throws StoreError `ERR_STORE_UNREADABLE` when the value does not decrypt under this key and
   *   place, or is not a partition; `ERR_CACHE_UNAVAILABLE` when Redis cannot be reached and
   *   there is no local copy.
   */
  async get(key: string): Promise<VersionedPartition | undefined> {
    let raw: unknown
    try {
      raw = await this.#run((client) => client.get(this.#namespace + key))
    } catch (err) {
      const copy = this.#copy(key)
      if (copy && isEdgeTokenError(err, 'ERR_CACHE_UNAVAILABLE') && !this.#closed) {
        return { value: copy.value, version: copy.version, stale: err }
      }
      throw err
    }
    if (raw === null || raw === undefined) {
      this.#copies.delete(key)
      return undefined
    }
    const text = typeof raw === 'string' ? raw : Buffer.isBuffer(raw) ? raw.toString('latin1') : undefined
    const dot = text?.indexOf('.') ?? -1
    if (text === undefined || dot < 1) {
      this.#copies.delete(key)
      // Opening it fails with the one message every unreadable value gets.
      return { value: this.#sealer.open(this.#namespace, key, ''), version: '' }
    }
    const version = text.slice(0, dot)
    const known = this.#copies.get(key)
    if (known && known.raw === text) {
      this.#remember(key, known)
      return { value: known.value, version }
    }
    this.#copies.delete(key)
    const value = this.#sealer.open(this.#namespace, key, text.slice(dot + 1))
    this.#remember(key, { value, version, raw: text, expiresAt: undefined })
    return { value, version }
  }

  /**
   * Writes a partition if its version is still `ifVersion` (one Lua script: compare, `SET` with
   * `PXAT expiresAt`, index). A write that timed out may or may not have been applied.
   *
   * @param key - the partition key.
   * @param value - the whole new partition.
   * @param options - the compare-and-set condition and the expiry (the key's TTL).
   * @returns the new version, or undefined when the condition failed.
   * @throws `ERR_CACHE_UNAVAILABLE` when Redis cannot be reached within `timeoutMs`.
   */
  async put(key: string, value: CachePartition, options: PutOptions = {}): Promise<string | undefined> {
    const { ifVersion, expiresAt } = options
    if (expiresAt !== undefined && !Number.isFinite(expiresAt)) {
      throw new TypeError('RedisTokenCache.put: expiresAt must be a finite number (epoch ms)')
    }
    const version = randomBytes(16).toString('base64url')
    const text = `${version}.${this.#sealer.seal(this.#namespace, key, value)}`
    const mode = ifVersion === undefined ? 'any' : ifVersion === null ? 'absent' : 'match'
    // PXAT 0 is an error; any past instant makes Redis drop the key at once, as wanted.
    const pxat = expiresAt === undefined ? '' : String(Math.max(1, Math.ceil(expiresAt)))
    const done = await this.#run((client) =>
      client.eval(PUT_SCRIPT, {
        keys: [this.#namespace + key, this.#indexKey(prefixOf(key))],
        arguments: [mode, ifVersion ?? '', text, pxat, key, this.#namespace],
      }),
    )
    if (done !== 1) {
      // Someone else changed it: our copy is outdated (or the account was removed).
      this.#copies.delete(key)
      return undefined
    }
    if (expiresAt === undefined || expiresAt > Date.now()) {
      this.#remember(key, { value, version, raw: text, expiresAt })
    }
    return version
  }

  /**
   * Removes a partition (and this process's copy of it, first, so a signed-out user is not served
   * from it while Redis is unreachable).
   *
   * @param key - the partition key.
   * @throws `ERR_CACHE_UNAVAILABLE` when Redis cannot be reached within `timeoutMs`.
   */
  async delete(key: string): Promise<void> {
    this.#copies.delete(key)
    await this.#run((client) =>
      client.eval(DELETE_SCRIPT, {
        keys: [this.#namespace + key, this.#indexKey(prefixOf(key))],
        arguments: [key],
      }),
    )
  }

  /**
   * The keys under a prefix, from its index set; members whose key expired are removed from it.
   *
   * @param prefix - `<app>/<kind>/`.
   * @returns the keys, in no particular order.
   * @throws `ERR_CACHE_UNAVAILABLE` when Redis cannot be reached within `timeoutMs`.
   */
  async list(prefix: string): Promise<string[]> {
    const members = await this.#run((client) =>
      client.eval(LIST_SCRIPT, { keys: [this.#indexKey(prefix)], arguments: [this.#namespace] }),
    )
    if (!Array.isArray(members)) return []
    const keys: string[] = []
    for (const m of members) {
      const k = typeof m === 'string' ? m : Buffer.isBuffer(m) ? m.toString('utf8') : undefined
      if (k !== undefined && prefixOf(k) === prefix) keys.push(k)
    }
    return keys
  }

  #indexKey(prefix: string): string {
    return `${this.#namespace}index:${prefix}`
  }

  #copy(key: string): LocalCopy | undefined {
    const copy = this.#copies.get(key)
    if (copy?.expiresAt !== undefined && copy.expiresAt <= Date.now()) {
      this.#copies.delete(key)
      return undefined
    }
    return copy
  }

  #remember(key: string, copy: LocalCopy): void {
    if (this.#maxCopies === 0) return
    // Map order is insertion order: re-inserting makes the key the most recent.
    this.#copies.delete(key)
    this.#copies.set(key, copy)
    if (this.#copies.size > this.#maxCopies) {
      const oldest = this.#copies.keys().next()
      if (!oldest.done) this.#copies.delete(oldest.value)
    }
  }

  /** Runs one operation within `timeoutMs`, connecting first if needed; maps failures. */
  async #run<T>(op: (client: RedisClientLike) => Promise<T>): Promise<T> {
    if (this.#closed) {
      throw new EdgeTokenError('ERR_CACHE_UNAVAILABLE', `token cache ${this.#label} was closed`)
    }
    // Loading the redis package (first use only) is not Redis being slow: outside the deadline.
    this.#client ??= this.#open()
    let client: RedisClientLike
    try {
      client = await this.#client
    } catch (err) {
      throw this.#unavailable(err)
    }
    let timer: ReturnType<typeof setTimeout> | undefined
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(TIMED_OUT), this.#timeoutMs)
    })
    const work = (async () => {
      const first = this.#firstConnect
      if (first && !client.isReady) await first
      return op(client)
    })()
    // After a timeout nobody awaits `work` any more; its late failure must not go unhandled.
    work.catch(() => {})
    try {
      return await Promise.race([work, deadline])
    } catch (err) {
      if (err === TIMED_OUT) {
        // Waited once for the first connection: from now on fail fast (offline queue disabled)
        // while the client keeps trying in the background.
        this.#firstConnect = undefined
      }
      throw this.#unavailable(err)
    } finally {
      clearTimeout(timer)
    }
  }

  async #open(): Promise<RedisClientLike> {
    let client = this.#given
    if (client === undefined) {
      const createClient = await loadRedis()
      client = createClient({
        url: this.#url,
        disableOfflineQueue: true,
        socket: {
          connectTimeout: Math.max(this.#timeoutMs, 2000),
          // Back-off with jitter so instances do not reconnect in lock-step after an outage.
          reconnectStrategy: (retries: number) =>
            Math.round(
              Math.min(RECONNECT_FIRST_MS * 2 ** retries, RECONNECT_MAX_MS) * (0.8 + Math.random() * 0.2),
            ),
        },
      })
    }
    // Without an 'error' listener node-redis's errors would be thrown as unhandled events.
    client.on('error', this.#onError)
    client.on('ready', this.#onReady)
    if (!client.isOpen) {
      this.#firstConnect = client.connect().then(
        () => {
          this.#firstConnect = undefined
        },
        (err: unknown) => {
          this.#firstConnect = undefined
          this.#lastError ??= err
        },
      )
    }
    return client
  }

  #unavailable(err: unknown): EdgeTokenError {
    if (err instanceof EdgeTokenError) return err
    // A refused AUTH shows up as the client's last error while commands fail as "offline".
    const reply = errorReplyCode(err) ?? errorReplyCode(this.#lastError)
    if (reply !== undefined) {
      return new EdgeTokenError(
        'ERR_CACHE_UNAVAILABLE',
        `token cache ${this.#label} refused the command (${reply}): check the url's credentials, the user's ACL and that Redis is a writable primary with memory to spare`,
        { cause: err },
      )
    }
    const socket = this.#lastError ?? err
    if (err === TIMED_OUT && this.#lastError === undefined) {
      return new EdgeTokenError(
        'ERR_CACHE_UNAVAILABLE',
        `token cache ${this.#label} did not answer within ${this.#timeoutMs} ms: check Redis's load and the network, or raise timeoutMs`,
      )
    }
    return new EdgeTokenError(
      'ERR_CACHE_UNAVAILABLE',
      `token cache ${this.#label} cannot be reached (${errno(socket)}): check that Redis runs and the url's host and port; valid tokens this process saw are served meanwhile`,
      { cause: err === TIMED_OUT ? socket : err },
    )
  }
}

function isEdgeTokenError(err: unknown, code: string): err is EdgeTokenError {
  return err instanceof EdgeTokenError && err.code === code
}

function prefixOf(key: string): string {
  return key.slice(0, key.lastIndexOf('/') + 1)
}

type CreateClient = (options: object) => RedisClientLike

async function loadRedis(): Promise<CreateClient> {
  try {
    const mod: { createClient: unknown } = await import('redis')
    return mod.createClient as CreateClient
  } catch (err) {
    throw new ConfigError(
      'RedisTokenCache with a url needs the redis package (an optional peer dependency): npm install redis',
      { key: 'url', cause: err },
    )
  }
}

/** `redis://host:port` of a url, without credentials, path or query. */
function urlLabel(url: string): string {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new ConfigError('RedisTokenCache url is not a URL (redis://host:port)', { key: 'url' })
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    throw new ConfigError(`RedisTokenCache url must be redis:// or rediss://, not ${parsed.protocol}//`, {
      key: 'url',
    })
  }
  return `${parsed.protocol}//${parsed.hostname || 'localhost'}:${parsed.port || '6379'}`
}

/** The host and port of an app's client, when its options show them. */
function clientLabel(client: unknown): string {
  const options = (client as { options?: unknown } | undefined)?.options
  if (typeof options === 'object' && options !== null) {
    const { url, socket } = options as { url?: unknown; socket?: unknown }
    if (typeof url === 'string') {
      try {
        return urlLabel(url)
      } catch {
        // not a url we can name: fall through
      }
    }
    if (typeof socket === 'object' && socket !== null) {
      const { host, port } = socket as { host?: unknown; port?: unknown }
      if (typeof host === 'string' || typeof port === 'number') {
        return `redis://${typeof host === 'string' ? host : 'localhost'}:${typeof port === 'number' ? port : 6379}`
      }
    }
  }
  return 'redis (the client given)'
}

/** The errno (`ECONNREFUSED`) or error class (`ConnectionTimeoutError`) of a connection failure. */
function errno(err: unknown): string {
  if (typeof err === 'object' && err !== null) {
    const code = (err as { code?: unknown }).code
    if (typeof code === 'string' && /^[A-Z0-9_]{2,40}$/.test(code)) return code
    const name = (err as { constructor?: { name?: unknown } }).constructor?.name
    if (typeof name === 'string' && name !== 'Error' && /^\w{1,60}$/.test(name)) return name
  }
  return 'unknown error'
}

/** The code word of a Redis error reply (`NOAUTH`, `OOM`, `READONLY`), or undefined. */
function errorReplyCode(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined
  for (let proto = Object.getPrototypeOf(err); proto; proto = Object.getPrototypeOf(proto)) {
    if (proto.constructor?.name === 'ErrorReply')
      return /^[A-Z][A-Z_]{1,30}\b/.exec(err.message)?.[0] ?? 'ERR'
  }
  return undefined
}
