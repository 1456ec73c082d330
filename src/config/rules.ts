/**
 * One rule per configuration key: where it comes from (file key, `EDGETOKEN_*` variable, flag) and
 * how its value is checked. Hand-written checks on purpose: config loading runs on the cached
 * `token` path, where importing a schema validator (ajv: ~27 ms) would cost more than the rest.
 * `config/schema.json` states the same rules for editors and operators; a test keeps them in step.
 *
 * @internal
 */
import { isAbsolute, resolve } from 'node:path'
import { ConfigError } from '../errors.js'
import { isLoopbackHost, secureUrl } from '../lib/url.js'
import { isObject, isPrintable } from '../lib/validate.js'
import {
  DISPLAY_NAMES,
  type DisplayName,
  GRANT_NAMES,
  type GrantName,
  LOG_LEVELS,
  type LogLevel,
  QR_THEMES,
  type QrTheme,
} from './types.js'

/** Where a value came from, so an error can name what the user actually typed. */
export interface Origin {
  /** What to call the value in a message: `mqtt.url`, `EDGETOKEN_MQTT_URL`, `--display`. */
  readonly label: string
  /** The dotted config key the value is for (`mqtt.url`). */
  readonly key: string
  /** Directory that relative paths are resolved against (the config file's, or the cwd). */
  readonly baseDir: string
}

type Check = (value: unknown, origin: Origin) => unknown

/** How an environment variable's or flag's text becomes the value the check sees. */
type TextKind = 'string' | 'words' | 'csv' | 'int' | 'bool' | 'auto-bool'

/** One configuration key. */
export interface Rule {
  /** Dotted key in the config file, e.g. `mqtt.url`. */
  readonly key: string
  /** The environment variable, when there is one. */
  readonly env?: string
  /** The flag (without `--`), when there is one. */
  readonly flag?: string
  /** How env/flag text is turned into a value. */
  readonly text: TextKind
  /** Validates (and normalises) a value. */
  readonly check: Check
}

function fail(origin: Origin, what: string, code?: 'ERR_INSECURE_URL'): never {
  const key = origin.key
  throw new ConfigError(`config: ${origin.label} ${what}`, code ? { key, code } : { key })
}

function string(value: unknown, origin: Origin, max = 2048): string {
  if (typeof value !== 'string' || value.length === 0) fail(origin, 'must be a non-empty string')
  if (value.length > max) fail(origin, `must be at most ${max} characters`)
  if (!isPrintable(value)) fail(origin, 'must not contain control characters')
  return value
}

function path(value: unknown, origin: Origin): string {
  const text = string(value, origin, 4096)
  return isAbsolute(text) ? text : resolve(origin.baseDir, text)
}

function integer(min: number, max: number): Check {
  return (value, origin) => {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      fail(origin, `must be an integer from ${min} to ${max}`)
    }
    return value
  }
}

function boolean(value: unknown, origin: Origin): boolean {
  if (typeof value !== 'boolean') fail(origin, 'must be true or false')
  return value
}

/** An https URL, or http to a loopback host; never credentials or a fragment in it. */
function httpsUrl(allowQuery: boolean): Check {
  return (value, origin) => {
    const text = string(value, origin)
    let parsed: URL
    try {
      parsed = new URL(text)
    } catch {
      return fail(origin, 'must be an https:// URL')
    }
    if (!secureUrl(text)) {
      fail(origin, 'must be an https:// URL (http:// only for loopback hosts)', 'ERR_INSECURE_URL')
    }
    if (parsed.username || parsed.password) fail(origin, 'must not carry credentials')
    if (parsed.hash || (!allowQuery && parsed.search)) {
      fail(origin, allowQuery ? 'must not carry a fragment' : 'must not carry a query or fragment')
    }
    return text
  }
}

// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]{1,256}$/

function scopes(value: unknown, origin: Origin): string[] {
  if (!Array.isArray(value)) fail(origin, 'must be an array of scope strings')
  if (value.length > 64) fail(origin, 'must list at most 64 scopes')
  for (const s of value) {
    if (typeof s !== 'string' || !SCOPE_TOKEN.test(s)) {
      fail(origin, 'must hold scope strings without spaces, quotes or backslashes (RFC 6749 §3.3)')
    }
  }
  return value as string[]
}

/** A client capability (`cp1`): a short token, sent inside the claims request's JSON. */
const CAPABILITY = /^[A-Za-z0-9._-]{1,64}$/

function clientCapabilities(value: unknown, origin: Origin): string[] {
  if (!Array.isArray(value)) fail(origin, 'must be an array of capability names, e.g. ["cp1"]')
  if (value.length > 16) fail(origin, 'must list at most 16 capabilities')
  for (const c of value) {
    if (typeof c !== 'string' || !CAPABILITY.test(c)) {
      fail(origin, 'must hold names of 1-64 characters of A-Z a-z 0-9 . _ - (e.g. "cp1")')
    }
  }
  return value as string[]
}

/** An MQTT topic level: no wildcards (`+`, `#`), no separator, no `$` system prefix. */
export const DEVICE_ID = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/

function deviceId(value: unknown, origin: Origin): string {
  const text = string(value, origin, 64)
  if (!DEVICE_ID.test(text)) {
    fail(origin, 'must be 1-64 characters of A-Z a-z 0-9 . _ - (it is an MQTT topic level)')
  }
  return text
}

const TOPIC_PREFIX = /^[A-Za-z0-9_-][A-Za-z0-9._-]*(?:\/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$/

function topicPrefix(value: unknown, origin: Origin): string {
  const text = string(value, origin, 128)
  if (!TOPIC_PREFIX.test(text)) {
    fail(origin, 'must be topic levels of A-Z a-z 0-9 . _ - separated by / (no wildcards, no leading $ or /)')
  }
  return text
}

function mqttUrl(value: unknown, origin: Origin): string {
  const text = string(value, origin)
  let parsed: URL | undefined
  try {
    parsed = new URL(text)
  } catch {
    parsed = undefined
  }
  if (!parsed || (parsed.protocol !== 'mqtt:' && parsed.protocol !== 'mqtts:') || !parsed.hostname) {
    fail(origin, 'must be an mqtt:// or mqtts:// URL')
  }
  if (parsed.username || parsed.password)
    fail(origin, 'must not carry credentials (use mqtt.username/password)')
  if ((parsed.pathname !== '' && parsed.pathname !== '/') || parsed.search || parsed.hash) {
    fail(origin, 'must be an mqtt:// or mqtts:// URL without a path, query or fragment')
  }
  return text
}

function display(value: unknown, origin: Origin): DisplayName[] {
  const message = `must be a list of ${DISPLAY_NAMES.join(', ')} (or none)`
  if (!Array.isArray(value)) fail(origin, message)
  const out: DisplayName[] = []
  for (const name of value) {
    if (!DISPLAY_NAMES.includes(name as DisplayName)) fail(origin, message)
    if (!out.includes(name as DisplayName)) out.push(name as DisplayName)
  }
  return out
}

function qrTheme(value: unknown, origin: Origin): QrTheme {
  if (!QR_THEMES.includes(value as QrTheme)) fail(origin, `must be one of ${QR_THEMES.join(', ')}`)
  return value as QrTheme
}

function dpop(value: unknown, origin: Origin): boolean | 'auto' {
  if (value !== 'auto' && typeof value !== 'boolean') fail(origin, 'must be "auto", true or false')
  return value
}

function logLevel(value: unknown, origin: Origin): LogLevel {
  if (!LOG_LEVELS.includes(value as LogLevel)) fail(origin, `must be one of ${LOG_LEVELS.join(', ')}`)
  return value as LogLevel
}

function grant(value: unknown, origin: Origin): GrantName {
  if (!GRANT_NAMES.includes(value as GrantName)) fail(origin, `must be one of ${GRANT_NAMES.join(', ')}`)
  return value as GrantName
}

function protocolVersion(value: unknown, origin: Origin): 4 | 5 {
  if (value !== 4 && value !== 5) fail(origin, 'must be 4 (MQTT 3.1.1) or 5')
  return value
}

// With the u flag a surrogate pair is one code point: only unpaired halves match.
const LONE_SURROGATE = /\p{Cs}/u

/**
 * Why an MQTT topic filter is invalid, or undefined when it is valid (MQTT 5 §4.7, 3.1.1 §4.7):
 * 1-65535 bytes of UTF-8 without U+0000 (nor other control characters: they end up in logs),
 * `+` and `#` only as whole levels, `#` only last. Shared subscriptions (`$share/...`) are refused:
 * they hand each message to one of several clients, which is not what spooling everything means.
 *
 * @param filter - the filter.
 * @returns a short reason, or undefined.
 * @see https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901241 (MQTT 5 §4.7)
 */
export function topicFilterProblem(filter: string): string | undefined {
  if (filter.length === 0) return 'is empty'
  // MQTT 5 §1.5.4 [MQTT-1.5.4-1]: no surrogate code points; [MQTT-4.7.3-3]: at most 65535 bytes.
  if (LONE_SURROGATE.test(filter)) return 'is not valid UTF-8'
  if (Buffer.byteLength(filter) > 65_535) return 'is longer than 65535 bytes'
  if (!isPrintable(filter)) return 'contains control characters'
  if (filter.startsWith('$share/')) return 'is a shared subscription ($share/...), which is not supported'
  const levels = filter.split('/')
  for (const [i, level] of levels.entries()) {
    // [MQTT-4.7.1-2]: `#` alone in its level and the last one; [MQTT-4.7.1-3]: `+` a whole level.
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) {
      return 'uses # other than as the whole last level'
    }
    if (level.includes('+') && level !== '+') return 'uses + other than as a whole level'
  }
  return undefined
}

/**
 * Whether a topic name matches a topic filter (MQTT 5 §4.7: `+` one level, `#` the parent level
 * and any below it; a filter starting with a wildcard does not match topics starting with `$`).
 *
 * @param filter - a valid topic filter.
 * @param topic - a topic name.
 * @returns true when a subscription to `filter` receives messages published to `topic`.
 */
export function topicMatches(filter: string, topic: string): boolean {
  // §4.7.2 [MQTT-4.7.2-1]
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= t.length) return false
    if (f[i] !== '+' && f[i] !== t[i]) return false
  }
  return f.length === t.length
}

function subscriptions(value: unknown, origin: Origin): string[] {
  if (!Array.isArray(value)) fail(origin, 'must be an array of MQTT topic filters')
  if (value.length > 64) fail(origin, 'must list at most 64 topic filters')
  const out: string[] = []
  for (const filter of value) {
    if (typeof filter !== 'string') fail(origin, 'must hold topic filter strings')
    const problem = topicFilterProblem(filter)
    if (problem) fail(origin, `filter ${JSON.stringify(filter.slice(0, 200))} ${problem}`)
    if (!out.includes(filter)) out.push(filter)
  }
  return out
}

function schemaRef(value: unknown, origin: Origin): string {
  return string(value, origin)
}

/** Every configuration key, in file order. The file may hold exactly these keys (and `$schema`). */
export const RULES: readonly Rule[] = [
  { key: '$schema', text: 'string', check: schemaRef },
  { key: 'authority', env: 'EDGETOKEN_AUTHORITY', text: 'string', check: httpsUrl(false) },
  { key: 'clientId', env: 'EDGETOKEN_CLIENT_ID', text: 'string', check: (v, o) => string(v, o, 256) },
  { key: 'grant', env: 'EDGETOKEN_GRANT', text: 'string', check: grant },
  { key: 'dpop', env: 'EDGETOKEN_DPOP', text: 'auto-bool', check: dpop },
  { key: 'clientCredential.secretFile', env: 'EDGETOKEN_CLIENT_SECRET_FILE', text: 'string', check: path },
  {
    key: 'clientCredential.certificateFile',
    env: 'EDGETOKEN_CLIENT_CERTIFICATE_FILE',
    text: 'string',
    check: path,
  },
  {
    key: 'clientCredential.privateKeyFile',
    env: 'EDGETOKEN_CLIENT_PRIVATE_KEY_FILE',
    text: 'string',
    check: path,
  },
  {
    key: 'clientCredential.privateKeyPassphraseFile',
    env: 'EDGETOKEN_CLIENT_PRIVATE_KEY_PASSPHRASE_FILE',
    text: 'string',
    check: path,
  },
  {
    key: 'clientCredential.sendCertificateChain',
    env: 'EDGETOKEN_CLIENT_SEND_CERTIFICATE_CHAIN',
    text: 'bool',
    check: boolean,
  },
  {
    key: 'clientCredential.assertionFile',
    env: 'EDGETOKEN_CLIENT_ASSERTION_FILE',
    text: 'string',
    check: path,
  },
  {
    key: 'managedIdentity.clientId',
    env: 'EDGETOKEN_MANAGED_IDENTITY_CLIENT_ID',
    text: 'string',
    check: (v, o) => string(v, o, 256),
  },
  {
    key: 'managedIdentity.resource',
    env: 'EDGETOKEN_MANAGED_IDENTITY_RESOURCE',
    text: 'string',
    check: (v, o) => string(v, o, 2048),
  },
  { key: 'scopes', env: 'EDGETOKEN_SCOPES', text: 'words', check: scopes },
  {
    key: 'clientCapabilities',
    env: 'EDGETOKEN_CLIENT_CAPABILITIES',
    text: 'words',
    check: clientCapabilities,
  },
  { key: 'deviceId', env: 'EDGETOKEN_DEVICE_ID', text: 'string', check: deviceId },
  { key: 'stateDir', env: 'EDGETOKEN_STATE_DIR', flag: 'state-dir', text: 'string', check: path },
  { key: 'keyFile', env: 'EDGETOKEN_KEY_FILE', text: 'string', check: path },
  { key: 'display', env: 'EDGETOKEN_DISPLAY', flag: 'display', text: 'csv', check: display },
  {
    key: 'timeoutSeconds',
    env: 'EDGETOKEN_TIMEOUT_SECONDS',
    flag: 'timeout-seconds',
    text: 'int',
    check: integer(1, 86_400),
  },
  { key: 'qrTheme', env: 'EDGETOKEN_QR_THEME', flag: 'qr-theme', text: 'string', check: qrTheme },
  { key: 'logLevel', env: 'EDGETOKEN_LOG_LEVEL', text: 'string', check: logLevel },
  { key: 'mqtt.url', env: 'EDGETOKEN_MQTT_URL', text: 'string', check: mqttUrl },
  { key: 'mqtt.topicPrefix', env: 'EDGETOKEN_MQTT_TOPIC_PREFIX', text: 'string', check: topicPrefix },
  { key: 'mqtt.caFile', env: 'EDGETOKEN_MQTT_CA_FILE', text: 'string', check: path },
  { key: 'mqtt.certFile', env: 'EDGETOKEN_MQTT_CERT_FILE', text: 'string', check: path },
  { key: 'mqtt.keyFile', env: 'EDGETOKEN_MQTT_KEY_FILE', text: 'string', check: path },
  {
    key: 'mqtt.username',
    env: 'EDGETOKEN_MQTT_USERNAME',
    text: 'string',
    check: (v, o) => string(v, o, 256),
  },
  {
    key: 'mqtt.password',
    env: 'EDGETOKEN_MQTT_PASSWORD',
    text: 'string',
    check: (v, o) => string(v, o, 1024),
  },
  { key: 'mqtt.passwordFile', env: 'EDGETOKEN_MQTT_PASSWORD_FILE', text: 'string', check: path },
  {
    key: 'mqtt.protocolVersion',
    env: 'EDGETOKEN_MQTT_PROTOCOL_VERSION',
    text: 'int',
    check: protocolVersion,
  },
  { key: 'mqtt.allowPair', env: 'EDGETOKEN_MQTT_ALLOW_PAIR', text: 'bool', check: boolean },
  { key: 'mqtt.subscriptions', env: 'EDGETOKEN_MQTT_SUBSCRIPTIONS', text: 'csv', check: subscriptions },
  { key: 'telemetry.endpoint', env: 'EDGETOKEN_TELEMETRY_ENDPOINT', text: 'string', check: httpsUrl(true) },
  {
    key: 'telemetry.batchMaxRecords',
    env: 'EDGETOKEN_TELEMETRY_BATCH_MAX_RECORDS',
    text: 'int',
    check: integer(1, 10_000),
  },
  {
    key: 'telemetry.lingerMs',
    env: 'EDGETOKEN_TELEMETRY_LINGER_MS',
    text: 'int',
    check: integer(0, 600_000),
  },
  {
    key: 'telemetry.spoolMaxBytes',
    env: 'EDGETOKEN_TELEMETRY_SPOOL_MAX_BYTES',
    text: 'int',
    check: integer(65_536, 2 ** 40),
  },
]

/** The sections of the file that hold nested keys. */
export const SECTIONS: readonly string[] = ['mqtt', 'telemetry', 'clientCredential', 'managedIdentity']

/**
 * Turns environment or flag text into the value a rule checks.
 *
 * @param rule - the rule.
 * @param text - the raw text.
 * @param origin - for error messages.
 * @returns the value to check.
 */
export function fromText(rule: Rule, text: string, origin: Origin): unknown {
  switch (rule.text) {
    case 'string':
      return text
    case 'words':
      return text.split(/\s+/).filter((s) => s.length > 0)
    case 'csv': {
      const items = text
        .split(/[\s,]+/)
        .map((s) => s.trim())
        .filter((s) => s.length > 0)
      return items.length === 1 && items[0] === 'none' ? [] : items
    }
    case 'int':
      return /^\d{1,15}$/.test(text.trim()) ? Number(text.trim()) : fail(origin, 'must be an integer')
    case 'bool':
    case 'auto-bool': {
      const t = text.trim().toLowerCase()
      if (t === 'true' || t === '1' || t === 'yes') return true
      if (t === 'false' || t === '0' || t === 'no') return false
      if (rule.text === 'auto-bool' && t === 'auto') return 'auto'
      return fail(origin, rule.text === 'auto-bool' ? 'must be auto, true or false' : 'must be true or false')
    }
  }
}

/** A value picked for a key, with where it came from. */
export interface Picked {
  readonly value: unknown
  readonly origin: Origin
}

/** Values of one source (file, environment or flags), by dotted key. */
export type Layer = Map<string, Picked>

const KNOWN = new Set(RULES.map((r) => r.key))

function closest(key: string): string | undefined {
  // Levenshtein distance <= 2 catches the usual typos (`mqtt.urll`, `clientID`, `scope`).
  let best: string | undefined
  let bestDistance = 3
  for (const candidate of KNOWN) {
    const d = distance(key.toLowerCase(), candidate.toLowerCase())
    if (d < bestDistance) {
      best = candidate
      bestDistance = d
    }
  }
  return best
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0] ?? 0
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const current = row[j] ?? 0
      row[j] = Math.min(current + 1, (row[j - 1] ?? 0) + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1))
      previous = current
    }
  }
  return row[b.length] ?? 0
}

function unknownKey(key: string): never {
  const hint = closest(key)
  throw new ConfigError(`config: unknown key ${key}${hint ? ` (did you mean ${hint}?)` : ''}`, { key })
}

/**
 * Checks that a dotted key is a config file key (or one of {@link SECTIONS}), for `config get|set|unset`.
 *
 * @param key - e.g. `mqtt.url`, or `mqtt` for the whole section.
 * @throws ConfigError `config: unknown key mqtt.urll (did you mean mqtt.url?)`, as the loader says it.
 */
export function assertKnownKey(key: string): void {
  if (!KNOWN.has(key) && !SECTIONS.includes(key)) unknownKey(key)
}

/**
 * Checks a parsed config file (still `unknown`) key by key.
 *
 * @param data - the parsed JSON.
 * @param baseDir - the config file's directory, for relative paths.
 * @returns the checked values by dotted key.
 * @throws ConfigError naming the first bad or unknown key.
 */
export function fileLayer(data: unknown, baseDir: string): Layer {
  if (!isObject(data)) throw new ConfigError('config: the config file must hold a JSON object')
  const layer: Layer = new Map()
  const visit = (value: unknown, key: string) => {
    const rule = RULES.find((r) => r.key === key)
    if (!rule) return unknownKey(key)
    const origin: Origin = { label: key, key, baseDir }
    layer.set(key, { value: rule.check(value, origin), origin })
  }
  for (const [key, value] of Object.entries(data)) {
    if (SECTIONS.includes(key)) {
      if (!isObject(value)) throw new ConfigError(`config: ${key} must be an object`, { key })
      for (const [sub, v] of Object.entries(value)) visit(v, `${key}.${sub}`)
    } else {
      visit(value, key)
    }
  }
  checkTogether(layer)
  if (Object.hasOwn(data, 'mqtt') && !layer.has('mqtt.url')) {
    throw new ConfigError('config: mqtt.url is required when mqtt is set', { key: 'mqtt.url' })
  }
  return layer
}

/**
 * Reads every `EDGETOKEN_*` variable a rule names (empty values count as unset).
 *
 * @param env - the environment.
 * @param cwd - the directory relative paths are resolved against.
 * @returns the checked values by dotted key.
 */
export function envLayer(env: NodeJS.ProcessEnv, cwd: string): Layer {
  const layer: Layer = new Map()
  for (const rule of RULES) {
    const text = rule.env ? env[rule.env] : undefined
    if (rule.env === undefined || text === undefined || text === '') continue
    const origin: Origin = { label: rule.env, key: rule.key, baseDir: cwd }
    layer.set(rule.key, { value: rule.check(fromText(rule, text, origin), origin), origin })
  }
  return layer
}

/**
 * Reads the flags a rule names.
 *
 * @param options - parsed flag values.
 * @param cwd - the directory relative paths are resolved against.
 * @returns the checked values by dotted key.
 */
export function flagLayer(options: Readonly<Record<string, unknown>>, cwd: string): Layer {
  const layer: Layer = new Map()
  for (const rule of RULES) {
    const text = rule.flag ? options[rule.flag] : undefined
    if (rule.flag === undefined || typeof text !== 'string') continue
    const origin: Origin = { label: `--${rule.flag}`, key: rule.key, baseDir: cwd }
    layer.set(rule.key, { value: rule.check(fromText(rule, text, origin), origin), origin })
  }
  return layer
}

/**
 * The grant's own needs, checked on the merged result only (the grant may come from the
 * environment and its credential from the file, or the other way round): `client_credentials`
 * needs a credential, `managed_identity` a resource, and a credential or identity without its
 * grant is an error rather than silently unused.
 *
 * @param layer - the merged values by dotted key.
 * @throws ConfigError naming the key at fault.
 */
export function checkGrant(layer: Layer): void {
  const picked = layer.get('grant')
  const chosen = (picked?.value as GrantName | undefined) ?? 'device_code'
  const label = picked?.origin.label ?? 'grant'
  const credential = [...layer.keys()].find((k) => k.startsWith('clientCredential.'))
  const identity = [...layer.keys()].find((k) => k.startsWith('managedIdentity.'))
  const origin = (key: string) => layer.get(key)?.origin.label ?? key
  if (chosen !== 'client_credentials' && credential !== undefined) {
    throw new ConfigError(`config: ${origin(credential)} is set, but ${label} is not client_credentials`, {
      key: credential,
    })
  }
  if (chosen !== 'managed_identity' && identity !== undefined) {
    throw new ConfigError(`config: ${origin(identity)} is set, but ${label} is not managed_identity`, {
      key: identity,
    })
  }
  if (
    chosen === 'client_credentials' &&
    !['secretFile', 'privateKeyFile', 'assertionFile'].some((k) => layer.has(`clientCredential.${k}`))
  ) {
    throw new ConfigError(
      `config: ${label} is client_credentials but no clientCredential is set (secretFile, certificateFile + privateKeyFile, or assertionFile)`,
      { key: 'clientCredential' },
    )
  }
  if (chosen === 'managed_identity' && !layer.has('managedIdentity.resource')) {
    throw new ConfigError(`config: ${label} is managed_identity but managedIdentity.resource is not set`, {
      key: 'managedIdentity.resource',
    })
  }
}

/**
 * Rules that involve more than one key; run on the file alone and again on the merged result.
 *
 * @param layer - values by dotted key.
 * @throws ConfigError naming the key at fault.
 */
export function checkTogether(layer: Layer): void {
  const get = (key: string) => layer.get(key)
  const label = (key: string) => get(key)?.origin.label ?? key
  const bad = (key: string, what: string): never => {
    throw new ConfigError(`config: ${label(key)} ${what}`, { key })
  }
  const url = get('mqtt.url')?.value as string | undefined
  const anyMqtt = [...layer.keys()].some((k) => k.startsWith('mqtt.') && k !== 'mqtt.url')
  if (anyMqtt && url === undefined) {
    const first = [...layer.keys()].find((k) => k.startsWith('mqtt.')) ?? 'mqtt.url'
    bad(first, 'needs mqtt.url')
  }
  if (get('mqtt.password') && !get('mqtt.username')) bad('mqtt.password', 'needs mqtt.username')
  if (get('mqtt.passwordFile') && !get('mqtt.username')) bad('mqtt.passwordFile', 'needs mqtt.username')
  if (get('mqtt.password') && get('mqtt.passwordFile')) {
    bad('mqtt.passwordFile', `and ${label('mqtt.password')} are both set; keep one (the file)`)
  }
  if (get('mqtt.certFile') && !get('mqtt.keyFile')) bad('mqtt.certFile', 'needs mqtt.keyFile')
  if (get('mqtt.keyFile') && !get('mqtt.certFile')) bad('mqtt.keyFile', 'needs mqtt.certFile')
  if (url?.startsWith('mqtt:')) {
    for (const key of ['mqtt.caFile', 'mqtt.certFile', 'mqtt.keyFile']) {
      if (get(key)) bad(key, 'needs an mqtts:// URL')
    }
    // A password in clear text over the network is a credential handed to anyone on the path.
    for (const key of ['mqtt.password', 'mqtt.passwordFile']) {
      if (get(key) && !isLoopbackHost(new URL(url).hostname)) {
        bad(key, 'needs an mqtts:// URL (plain mqtt:// only to a loopback broker)')
      }
    }
  }
  // One credential kind: a secret, a key (with its certificate), or a federated assertion.
  const kinds = [
    ['clientCredential.secretFile'],
    ['clientCredential.privateKeyFile', 'clientCredential.certificateFile'],
    ['clientCredential.assertionFile'],
  ]
    .map((keys) => keys.find((k) => get(k)))
    .filter((k): k is string => k !== undefined)
  if (kinds.length > 1) bad(kinds[1] ?? '', `and ${label(kinds[0] ?? '')} are both set; keep one credential`)
  if (get('clientCredential.certificateFile') && !get('clientCredential.privateKeyFile')) {
    bad('clientCredential.certificateFile', 'needs clientCredential.privateKeyFile')
  }
  if (get('clientCredential.privateKeyPassphraseFile') && !get('clientCredential.privateKeyFile')) {
    bad('clientCredential.privateKeyPassphraseFile', 'needs clientCredential.privateKeyFile')
  }
  if (
    get('clientCredential.sendCertificateChain')?.value === true &&
    !get('clientCredential.certificateFile')
  ) {
    bad('clientCredential.sendCertificateChain', 'needs clientCredential.certificateFile')
  }
  const shown = get('display')?.value as readonly string[] | undefined
  if (shown?.includes('mqtt') && url === undefined) bad('display', 'includes mqtt but mqtt.url is not set')
}
