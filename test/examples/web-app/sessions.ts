/**
 * Server-side sessions of the example web app (issue 18). The browser holds only a random id in a
 * cookie; what it stands for (the signed-in account's id, or a pending sign-in with its PKCE
 * verifier) stays here: in memory for one process, or in Redis for several instances behind a load
 * balancer, sealed with AES-256-GCM so that Redis never holds a verifier in clear.
 *
 * @packageDocumentation
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto'
import type { ConfidentialAuthorizationRequest } from '../../../src/index.js'
import { EdgeTokenError } from '../../../src/index.js'

/** What a session id stands for. */
export interface Session {
  /** The signed-in account's id (the token cache partition of that user). */
  accountId?: string | undefined
  /** A sign-in in progress: the request `getAuthorizationUrl` returned (its verifier is secret). */
  signIn?: ConfidentialAuthorizationRequest | undefined
}

/** Where sessions live. */
export interface SessionStore {
  /**
   * Reads a session.
   *
   * @param id - the id from the cookie (untrusted).
   * @returns the session, or undefined when unknown or expired.
   * @throws EdgeTokenError `ERR_CACHE_UNAVAILABLE` when the store cannot be reached.
   */
  get(id: string): Promise<Session | undefined>
  /**
   * Writes a session.
   *
   * @param id - the session id.
   * @param session - what it stands for.
   * @param ttlSeconds - when to forget it.
   */
  set(id: string, session: Session, ttlSeconds: number): Promise<void>
  /**
   * Forgets a session.
   *
   * @param id - the session id.
   */
  delete(id: string): Promise<void>
  /** Releases connections. */
  close(): Promise<void>
}

/**
 * A new session id: 256 random bits, base64url.
 *
 * @returns the id.
 */
export function newSessionId(): string {
  return randomBytes(32).toString('base64url')
}

const SESSION_ID = /^[A-Za-z0-9_-]{43}$/

/**
 * Whether a cookie value has the shape of a session id (anything else is not looked up).
 *
 * @param value - the cookie value.
 * @returns true when it does.
 */
export function isSessionId(value: string | undefined): value is string {
  return value !== undefined && SESSION_ID.test(value)
}

/** Sessions in this process: bounded, oldest forgotten first. */
export class MemorySessionStore implements SessionStore {
  readonly #sessions = new Map<string, { session: Session; until: number }>()
  readonly #max: number

  /** @param max - most sessions kept. Default 10000. */
  constructor(max = 10_000) {
    this.#max = max
  }

  async get(id: string): Promise<Session | undefined> {
    const entry = this.#sessions.get(id)
    if (entry === undefined || entry.until <= Date.now()) return undefined
    return entry.session
  }

  async set(id: string, session: Session, ttlSeconds: number): Promise<void> {
    this.#sessions.delete(id)
    this.#sessions.set(id, { session, until: Date.now() + ttlSeconds * 1000 })
    for (const key of this.#sessions.keys()) {
      if (this.#sessions.size <= this.#max) break
      this.#sessions.delete(key)
    }
  }

  async delete(id: string): Promise<void> {
    this.#sessions.delete(id)
  }

  async close(): Promise<void> {}
}

/** The part of a node-redis client the Redis session store uses. */
interface RedisLike {
  connect(): Promise<unknown>
  get(key: string): Promise<string | null>
  set(key: string, value: string, options: { EX: number }): Promise<unknown>
  del(key: string): Promise<unknown>
  on(event: 'error', listener: (err: Error) => void): unknown
  close(): Promise<unknown>
  destroy(): unknown
}

const TIMEOUT_MS = 1000
const LOCAL_COPIES = 10_000

/**
 * Sessions in Redis, shared by every instance. Keys are `webapp:session:<SHA-256 of the id>` (a
 * key listing shows no cookie), values AES-256-GCM sealed under a key derived from the app key with
 * HKDF (another `info` than the token cache's, so neither opens the other's values), the key bound
 * as additional data. While Redis is down, a session this process has seen is read from its own
 * copy, so users whose tokens are still valid keep being served.
 */
export class RedisSessionStore implements SessionStore {
  readonly #url: string
  readonly #key: Buffer
  readonly #local = new Map<string, Session>()
  /** The `redis` package, loaded at construction: loading is not part of a command's time bound. */
  readonly #module = import('redis')
  #client: Promise<RedisLike> | undefined
  /** The client made, connected or still trying (it keeps reconnecting in the background). */
  #raw: RedisLike | undefined

  /**
   * @param url - `redis://host:port`.
   * @param appKey - the app's 32-byte key (base64url), the one the token cache uses. Secret.
   */
  constructor(url: string, appKey: string) {
    this.#url = url
    this.#key = Buffer.from(
      hkdfSync('sha256', Buffer.from(appKey, 'base64url'), 'edgetoken-example', 'web-app sessions v1', 32),
    )
  }

  async get(id: string): Promise<Session | undefined> {
    const key = this.#redisKey(id)
    let text: string | null
    try {
      text = await this.#run((c) => c.get(key))
    } catch (err) {
      const copy = this.#local.get(key)
      if (copy !== undefined) return copy
      throw err
    }
    if (text === null) {
      this.#local.delete(key)
      return undefined
    }
    const session = this.#open(key, text)
    if (session !== undefined) this.#remember(key, session)
    return session
  }

  async set(id: string, session: Session, ttlSeconds: number): Promise<void> {
    const key = this.#redisKey(id)
    await this.#run((c) => c.set(key, this.#seal(key, session), { EX: ttlSeconds }))
    this.#remember(key, session)
  }

  async delete(id: string): Promise<void> {
    const key = this.#redisKey(id)
    this.#local.delete(key)
    await this.#run((c) => c.del(key))
  }

  async close(): Promise<void> {
    const client = this.#raw
    if (client === undefined) return
    // close() waits for pending replies, which a Redis that is gone never sends: bounded, then destroy.
    let timer: NodeJS.Timeout | undefined
    const waited = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, TIMEOUT_MS)
    })
    await Promise.race([client.close().catch(() => undefined), waited])
    clearTimeout(timer)
    try {
      client.destroy()
    } catch {
      // already closed
    }
  }

  #remember(key: string, session: Session): void {
    this.#local.delete(key)
    this.#local.set(key, session)
    for (const old of this.#local.keys()) {
      if (this.#local.size <= LOCAL_COPIES) break
      this.#local.delete(old)
    }
  }

  #redisKey(id: string): string {
    return `webapp:session:${createHash('sha256').update(id).digest('base64url')}`
  }

  #seal(key: string, session: Session): string {
    const iv = randomBytes(12)
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv)
    cipher.setAAD(Buffer.from(key))
    const body = Buffer.concat([cipher.update(JSON.stringify(session), 'utf8'), cipher.final()])
    return Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64url')
  }

  #open(key: string, text: string): Session | undefined {
    try {
      const raw = Buffer.from(text, 'base64url')
      const decipher = createDecipheriv('aes-256-gcm', this.#key, raw.subarray(0, 12))
      decipher.setAAD(Buffer.from(key))
      decipher.setAuthTag(raw.subarray(raw.length - 16))
      const json = Buffer.concat([decipher.update(raw.subarray(12, raw.length - 16)), decipher.final()])
      const value: unknown = JSON.parse(json.toString('utf8'))
      return typeof value === 'object' && value !== null ? (value as Session) : undefined
    } catch {
      // Fail closed: a value that does not open is no session (the user signs in again).
      return undefined
    }
  }

  async #run<T>(command: (client: RedisLike) => Promise<T>): Promise<T> {
    await this.#module
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(this.#unavailable('timed out')), TIMEOUT_MS)
    })
    try {
      return await Promise.race([this.#connect().then(command), timeout])
    } catch (err) {
      throw err instanceof EdgeTokenError
        ? err
        : this.#unavailable((err as { code?: string }).code ?? 'error')
    } finally {
      clearTimeout(timer)
    }
  }

  #connect(): Promise<RedisLike> {
    this.#client ??= (async () => {
      const { createClient } = await this.#module
      const client = createClient({
        url: this.#url,
        // Commands fail at once while disconnected instead of queueing behind a dead socket.
        disableOfflineQueue: true,
        socket: { connectTimeout: TIMEOUT_MS, reconnectStrategy: (n: number) => Math.min(50 * 2 ** n, 1000) },
      }) as unknown as RedisLike
      this.#raw = client
      client.on('error', () => {}) // reconnects by itself; commands report the outage
      await client.connect()
      return client
    })().catch((err: unknown) => {
      this.#client = undefined
      throw err
    })
    return this.#client
  }

  #unavailable(why: string): EdgeTokenError {
    const { host } = new URL(this.#url)
    return new EdgeTokenError(
      'ERR_CACHE_UNAVAILABLE',
      `session store redis://${host} cannot be reached (${why}): check that Redis is running`,
    )
  }
}
