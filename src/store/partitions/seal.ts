/**
 * Encryption of token cache partitions kept outside the process (Redis): AES-256-GCM under a
 * subkey derived with HKDF-SHA256 from the app's 32-byte key, a fresh random 96-bit IV per value,
 * and additional authenticated data that binds the format version, the namespace and the
 * partition key, so a value copied under another key (another user's partition, another app's
 * namespace) does not open.
 *
 * Sealed text: `s1.` + base64url(IV ‖ ciphertext ‖ tag). It is ASCII with no `.` after the
 * prefix, so a store can put it after other fields (Redis: `<version>.<sealed>`).
 *
 * Fails closed: text that does not open under this key and context, or opens to something that
 * is not a {@link CachePartition}, is a {@link StoreError} `ERR_STORE_UNREADABLE`; there is no
 * plaintext fallback, and the message never shows the content.
 *
 * @see https://www.rfc-editor.org/rfc/rfc5869 (HKDF)
 * @see https://nvlpubs.nist.gov/nistpubs/Legacy/SP/nistspecialpublication800-38d.pdf (GCM, 96-bit IVs)
 * @packageDocumentation
 */
import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  hkdfSync,
  type KeyObject,
  randomBytes,
} from 'node:crypto'
import { ConfigError, StoreError } from '../../errors.js'
import { parseJson } from '../../lib/validate.js'
import { type CachePartition, isCachePartition } from './token-cache.js'

/** Prefix of sealed text: the format version. */
const PREFIX = 's1.'
const IV_BYTES = 12
const TAG_BYTES = 16
const KEY_BYTES = 32
const HKDF_SALT = 'edgetoken/token-cache'
const HKDF_INFO = 'edgetoken token cache v1/aes-256-gcm'
/** Base64url of 32 bytes: 43 characters (and the one `=` of padding, if any). */
const KEY_TEXT = /^[A-Za-z0-9_-]{43}=?$/

/** Seals and opens partitions under one app key; the key itself is not reachable from it. */
export interface PartitionSealer {
  /**
   * Encrypts a partition for one place.
   *
   * @param namespace - the store's namespace (bound into the AAD).
   * @param key - the partition key (bound into the AAD).
   * @param value - the partition.
   * @returns the sealed text.
   */
  seal(namespace: string, key: string, value: CachePartition): string
  /**
   * Decrypts and validates a sealed partition read from that place.
   *
   * @param namespace - the store's namespace.
   * @param key - the partition key it was read under.
   * @param text - the sealed text.
   * @returns the partition (frozen at the top level).
   * @throws StoreError `ERR_STORE_UNREADABLE` when it does not open or validate.
   */
  open(namespace: string, key: string, text: string): CachePartition
}

/**
 * Reads an app key: 32 bytes, as bytes or base64url text (43 characters, `=` padding allowed).
 *
 * @param key - the key.
 * @returns a copy of the key bytes.
 * @throws ConfigError when it is not exactly 32 bytes (the message never shows the key).
 */
export function readAppKey(key: Uint8Array | string): Buffer {
  if (typeof key === 'string') {
    if (!KEY_TEXT.test(key)) {
      throw new ConfigError(
        `token cache key must be 32 bytes as base64url text (43 characters); got ${key.length} characters: generate one with \`node -e "console.log(crypto.randomBytes(32).toString('base64url'))"\``,
        { key: 'key' },
      )
    }
    return Buffer.from(key.replace(/=$/, ''), 'base64url')
  }
  if (!(key instanceof Uint8Array) || key.byteLength !== KEY_BYTES) {
    const got = key instanceof Uint8Array ? `${key.byteLength} bytes` : typeof key
    throw new ConfigError(`token cache key must be 32 bytes; got ${got}`, { key: 'key' })
  }
  return Buffer.from(key)
}

function aad(namespace: string, key: string): Buffer {
  // JSON keeps the parts apart whatever characters they hold (no `a:b` + `c` vs `a` + `b:c`).
  return Buffer.from(JSON.stringify([PREFIX, namespace, key]), 'utf8')
}

function unreadable(namespace: string, key: string, why: string, cause?: unknown): StoreError {
  return new StoreError(
    `token cache value ${JSON.stringify(namespace + key)} ${why}: it was changed, moved from another key, or written with another app key; delete it (the user signs in again) or configure the key it was written with`,
    cause === undefined ? undefined : { cause },
  )
}

/**
 * Derives the sealing key from an app key (HKDF-SHA256) and returns a sealer.
 *
 * @param key - the app's 32-byte key, as bytes or base64url text.
 * @returns the sealer.
 * @throws ConfigError when the key is not 32 bytes.
 * @see https://www.rfc-editor.org/rfc/rfc5869#section-2
 * @example
 * ```ts
 * const sealer = createPartitionSealer(process.env.TOKEN_CACHE_KEY!)
 * const text = sealer.seal('edgetoken:', key, partition)
 * const back = sealer.open('edgetoken:', key, text)
 * ```
 */
export function createPartitionSealer(key: Uint8Array | string): PartitionSealer {
  const material = readAppKey(key)
  const raw = Buffer.from(hkdfSync('sha256', material, HKDF_SALT, HKDF_INFO, KEY_BYTES))
  const secret: KeyObject = createSecretKey(raw)
  raw.fill(0)
  material.fill(0)
  return Object.freeze({
    seal(namespace: string, partition: string, value: CachePartition): string {
      const iv = randomBytes(IV_BYTES)
      const cipher = createCipheriv('aes-256-gcm', secret, iv, { authTagLength: TAG_BYTES })
      cipher.setAAD(aad(namespace, partition))
      const body = cipher.update(JSON.stringify(value), 'utf8')
      const final = cipher.final()
      return PREFIX + Buffer.concat([iv, body, final, cipher.getAuthTag()]).toString('base64url')
    },
    open(namespace: string, partition: string, text: string): CachePartition {
      if (!text.startsWith(PREFIX)) throw unreadable(namespace, partition, 'is not in a known format')
      const blob = Buffer.from(text.slice(PREFIX.length), 'base64url')
      if (blob.length < IV_BYTES + TAG_BYTES) throw unreadable(namespace, partition, 'is truncated')
      let plain: string
      try {
        const decipher = createDecipheriv('aes-256-gcm', secret, blob.subarray(0, IV_BYTES), {
          authTagLength: TAG_BYTES,
        })
        decipher.setAAD(aad(namespace, partition))
        decipher.setAuthTag(blob.subarray(blob.length - TAG_BYTES))
        plain = decipher.update(blob.subarray(IV_BYTES, blob.length - TAG_BYTES), undefined, 'utf8')
        plain += decipher.final('utf8')
      } catch (err) {
        throw unreadable(namespace, partition, 'does not decrypt under this key for this place', err)
      }
      const value = parseJson(plain)
      if (!isCachePartition(value)) throw unreadable(namespace, partition, 'is not a valid partition')
      return Object.freeze(value)
    },
  })
}
