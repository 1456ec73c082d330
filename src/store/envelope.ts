/**
 * The token store's encryption envelope: AES-256-GCM with a fresh random 96-bit IV per write, keys
 * derived with HKDF-SHA256 from the key material, and additional authenticated data that binds the
 * format version, the purpose and the machine id.
 *
 * The file is one line of JSON text:
 * `{"format":"edgetoken-store","v":1,"kcv":…,"mid":…,"iv":…,"tag":…,"ct":…}` (binary fields base64url).
 * `kcv` (key check value) and `mid` (machine fingerprint) are HMACs under subkeys of the same
 * material: they reveal nothing without the key, and let a failure name its cause (wrong key,
 * another machine, tampering) instead of one vague "cannot decrypt".
 *
 * Fails closed: anything that is not an intact envelope for this key and machine is a
 * {@link StoreError} (exit 6); there is no plaintext fallback.
 *
 * @see https://www.rfc-editor.org/rfc/rfc5869 (HKDF)
 * @see https://nvlpubs.nist.gov/nistpubs/Legacy/SP/nistspecialpublication800-38d.pdf (GCM, 96-bit IVs)
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createSecretKey,
  hkdfSync,
  type KeyObject,
  randomBytes,
  timingSafeEqual,
} from 'node:crypto'
import { StoreError } from '../errors.js'
import { isObject, parseJson } from '../lib/validate.js'

/** The `format` field of every store file. */
export const STORE_FORMAT = 'edgetoken-store'
/** The envelope format version this code writes and reads. */
export const STORE_VERSION = 1
/** Bound into the additional authenticated data and the HKDF info. */
export const STORE_PURPOSE = 'edgetoken token store v1'

const IV_BYTES = 12
const TAG_BYTES = 16
const CHECK_BYTES = 16
const HKDF_SALT = 'edgetoken/store'

/** Keys derived from the key material; opaque KeyObjects so they never print. */
export interface StoreKeys {
  /** AES-256-GCM key. */
  readonly encryption: KeyObject
  /** HMAC key of the key check value. */
  readonly check: KeyObject
  /** HMAC key of the machine fingerprint. */
  readonly machine: KeyObject
}

/** What sealing and opening need besides the data. */
export interface EnvelopeContext {
  /** The derived keys. */
  readonly keys: StoreKeys
  /** The machine id, when the machine has one. */
  readonly machineId: string | undefined
  /** The store file, named in error messages. */
  readonly path: string
}

function subkey(material: Uint8Array, label: string): KeyObject {
  const raw = Buffer.from(hkdfSync('sha256', material, HKDF_SALT, `${STORE_PURPOSE}/${label}`, 32))
  const key = createSecretKey(raw)
  raw.fill(0)
  return key
}

/**
 * Derives the store's keys from key material (HKDF-SHA256, one subkey per use).
 *
 * @param material - at least 32 bytes of key material.
 * @returns the keys.
 * @see https://www.rfc-editor.org/rfc/rfc5869#section-2
 */
export function deriveStoreKeys(material: Uint8Array): StoreKeys {
  return {
    encryption: subkey(material, 'aes-256-gcm'),
    check: subkey(material, 'key-check'),
    machine: subkey(material, 'machine'),
  }
}

/** The HKDF info of the discovery cache's HMAC key. */
export const METADATA_PURPOSE = 'edgetoken metadata cache v1'

/**
 * Derives the HMAC-SHA256 key that authenticates the discovery cache (`metadata.json`) from the
 * store's key material: HKDF-SHA256, info {@link METADATA_PURPOSE}, so it is independent of the
 * store's own keys.
 *
 * @param material - the key material (bytes or a secret KeyObject).
 * @returns the key.
 * @see https://www.rfc-editor.org/rfc/rfc5869#section-2
 */
export function deriveMetadataKey(material: Uint8Array | KeyObject): KeyObject {
  const raw = Buffer.from(hkdfSync('sha256', material, HKDF_SALT, METADATA_PURPOSE, 32))
  const key = createSecretKey(raw)
  raw.fill(0)
  return key
}

function hmac16(key: KeyObject, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest().subarray(0, CHECK_BYTES)
}

function aad(kcv: string, mid: string, machineId: string | undefined): Buffer {
  return Buffer.from(
    `${STORE_PURPOSE}\n${JSON.stringify([STORE_FORMAT, STORE_VERSION, kcv, mid, machineId ?? ''])}`,
  )
}

/**
 * Encrypts a document's text into an envelope.
 *
 * @param plaintext - the serialized document (secret).
 * @param context - keys and machine id.
 * @returns one line of JSON text ending in a newline.
 */
export function seal(plaintext: string, context: EnvelopeContext): string {
  const { keys, machineId } = context
  const kcv = hmac16(keys.check, 'key-check').toString('base64url')
  const mid = hmac16(keys.machine, machineId ?? '').toString('base64url')
  const iv = randomBytes(IV_BYTES)
  const cipher = createCipheriv('aes-256-gcm', keys.encryption, iv, { authTagLength: TAG_BYTES })
  cipher.setAAD(aad(kcv, mid, machineId))
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()])
  const tag = cipher.getAuthTag()
  return `${JSON.stringify({
    format: STORE_FORMAT,
    v: STORE_VERSION,
    kcv,
    mid,
    iv: iv.toString('base64url'),
    tag: tag.toString('base64url'),
    ct: ct.toString('base64url'),
  })}\n`
}

function field(
  envelope: Record<string, unknown>,
  name: string,
  bytes: number | undefined,
): Buffer | undefined {
  const value = envelope[name]
  if (typeof value !== 'string' || !/^[A-Za-z0-9_-]*$/.test(value)) return undefined
  const decoded = Buffer.from(value, 'base64url')
  if (bytes !== undefined && decoded.length !== bytes) return undefined
  return decoded
}

/**
 * Decrypts an envelope, failing closed.
 *
 * @param text - the file's content.
 * @param context - keys and machine id.
 * @returns the document's text.
 * @throws StoreError (`ERR_STORE_UNREADABLE`) naming the cause: not an envelope (truncated,
 *   plaintext, foreign), unsupported version, wrong key, another machine, or failed authentication.
 */
export function open(text: string, context: EnvelopeContext): string {
  const { keys, machineId, path } = context
  const envelope = parseJson(text)
  if (!isObject(envelope) || envelope.format !== STORE_FORMAT) {
    throw new StoreError(
      `token store ${path} is not an encrypted edgetoken store (truncated, plaintext or foreign)`,
    )
  }
  if (envelope.v !== STORE_VERSION) {
    throw new StoreError(`token store ${path} has an unsupported format version`)
  }
  const kcv = field(envelope, 'kcv', CHECK_BYTES)
  const mid = field(envelope, 'mid', CHECK_BYTES)
  const iv = field(envelope, 'iv', IV_BYTES)
  const tag = field(envelope, 'tag', TAG_BYTES)
  const ct = field(envelope, 'ct', undefined)
  if (!kcv || !mid || !iv || !tag || !ct) {
    throw new StoreError(`token store ${path} is damaged (an envelope field is malformed)`)
  }
  if (!timingSafeEqual(kcv, hmac16(keys.check, 'key-check'))) {
    throw new StoreError(
      `token store ${path} was encrypted with a different key (check EDGETOKEN_KEY_FILE or the edgetoken.key credential)`,
    )
  }
  if (!timingSafeEqual(mid, hmac16(keys.machine, machineId ?? ''))) {
    throw new StoreError(
      `token store ${path} belongs to another machine (machine-id differs); remove it and sign in again`,
    )
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', keys.encryption, iv, { authTagLength: TAG_BYTES })
    decipher.setAAD(aad(envelope.kcv as string, envelope.mid as string, machineId))
    decipher.setAuthTag(tag)
    return Buffer.concat([decipher.update(ct), decipher.final()]).toString('utf8')
  } catch (err) {
    throw new StoreError(`token store ${path} failed authentication (tampered or corrupted)`, { cause: err })
  }
}
