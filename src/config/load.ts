/**
 * Configuration loading: flags over `EDGETOKEN_*` environment over the JSON config file over
 * defaults, every value checked by hand (see ./rules.ts) and the result frozen.
 *
 * Cheap on purpose: it runs on the cached `token` path, so it imports only node built-ins.
 *
 * @packageDocumentation
 */
import { existsSync, readFileSync, statSync } from 'node:fs'
import { homedir, hostname } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { ConfigError } from '../errors.js'
import {
  checkGrant,
  checkTogether,
  envLayer,
  fileLayer,
  flagLayer,
  type Layer,
  RULES,
  topicMatches,
} from './rules.js'
import type {
  ClientCredentialConfig,
  DisplayName,
  EdgeTokenConfig,
  GrantName,
  ManagedIdentityConfig,
  MqttConfig,
  OptionValues,
  TelemetryConfig,
} from './types.js'

/** Where configuration comes from. */
export interface LoadConfigSource {
  /** Parsed flags (`--config`, `--state-dir`, `--display`, `--timeout-seconds`, `--qr-theme`). */
  readonly options: OptionValues
  /** The environment (`EDGETOKEN_*`, `STATE_DIRECTORY`, `XDG_*`, `HOME`). */
  readonly env: NodeJS.ProcessEnv
  /** The directory relative paths given in flags or environment are resolved against. Default: the cwd. */
  readonly cwd?: string
  /**
   * Where a warning about the configuration goes (one line, no secret): a config file that holds
   * `mqtt.password` and is readable by group or others. Default: `edgetoken: warning: ...` on
   * stderr. Each file is warned about once per process.
   */
  readonly warn?: (line: string) => void
}

/** Scopes requested when none are configured. */
export const DEFAULT_SCOPES: readonly string[] = Object.freeze(['openid', 'profile', 'offline_access'])
/** The default MQTT topic prefix. */
export const DEFAULT_TOPIC_PREFIX = 'edgetoken'
/** Default telemetry batching and spool settings. */
export const DEFAULT_TELEMETRY: TelemetryConfig = Object.freeze({
  batchMaxRecords: 500,
  lingerMs: 1000,
  spoolMaxBytes: 64 * 1024 * 1024,
})

const MAX_CONFIG_BYTES = 1024 * 1024

/**
 * Loads and validates the configuration.
 *
 * Order for every key: flag > `EDGETOKEN_*` environment > config file > default. The config file is
 * `--config`, else `EDGETOKEN_CONFIG`, else the first that exists of
 * `$XDG_CONFIG_HOME/edgetoken/config.json` (`~/.config/edgetoken/config.json`) and
 * `/etc/edgetoken/config.json`; without one, only environment and defaults apply.
 * Relative paths in the file are relative to the file.
 *
 * @param source - flags and environment.
 * @returns the frozen configuration.
 * @throws ConfigError (`ERR_CONFIG`, or `ERR_INSECURE_URL` for an http authority or endpoint to a
 *   non-loopback host) whose message names the key: `config: mqtt.url must be an mqtt:// or mqtts:// URL`.
 * @example
 * ```ts
 * const config = await loadConfig({ options: ctx.options, env: process.env })
 * const { authority, clientId, scopes } = requireIdentity(config)
 * ```
 */
export async function loadConfig(source: LoadConfigSource): Promise<EdgeTokenConfig> {
  const { env, options } = source
  const cwd = source.cwd ?? process.cwd()
  const flags = flagLayer(options, cwd)
  const environment = envLayer(env, cwd)
  const configFile = await findConfigFile(options, env, cwd)
  const file = configFile ? fileLayer(await readConfigFile(configFile), dirname(configFile)) : new Map()

  const merged: Layer = new Map()
  for (const rule of RULES) {
    const picked = flags.get(rule.key) ?? environment.get(rule.key) ?? file.get(rule.key)
    if (picked) merged.set(rule.key, picked)
  }
  // The systemd credential (LoadCredential[Encrypted]=mqtt-password:...) comes after every
  // configured password: like the store key, an explicit setting wins.
  const credential = env.CREDENTIALS_DIRECTORY ? join(env.CREDENTIALS_DIRECTORY, 'mqtt-password') : undefined
  if (
    credential &&
    merged.has('mqtt.url') &&
    !merged.has('mqtt.password') &&
    !merged.has('mqtt.passwordFile') &&
    existsSync(credential)
  ) {
    const origin = { label: '$CREDENTIALS_DIRECTORY/mqtt-password', key: 'mqtt.passwordFile', baseDir: cwd }
    merged.set('mqtt.passwordFile', { value: credential, origin })
  }
  // Workload identity federation (Azure's webhook, and what azure-identity reads): the projected
  // token file, when client_credentials has no credential of its own.
  const federated = env.AZURE_FEDERATED_TOKEN_FILE
  if (
    federated &&
    merged.get('grant')?.value === 'client_credentials' &&
    ![...merged.keys()].some((k) => k.startsWith('clientCredential.'))
  ) {
    const origin = {
      label: 'AZURE_FEDERATED_TOKEN_FILE',
      key: 'clientCredential.assertionFile',
      baseDir: cwd,
    }
    merged.set('clientCredential.assertionFile', { value: resolve(cwd, federated), origin })
  }
  checkTogether(merged)
  checkGrant(merged)
  if (configFile && file.has('mqtt.password')) warnReadableSecret(configFile, source.warn)
  const value = <T>(key: string): T | undefined => merged.get(key)?.value as T | undefined

  const grant = value<GrantName>('grant') ?? 'device_code'
  const resource = value<string>('managedIdentity.resource')
  let scopes: string[]
  if (grant === 'managed_identity' && resource !== undefined) {
    // A managed identity's token is for one resource: it is the "scope" tokens are cached under.
    scopes = [resource]
  } else if (grant === 'client_credentials') {
    // Sent as given: no refresh token to ask for, and Entra wants exactly `<resource>/.default`.
    scopes = [...(value<string[]>('scopes') ?? [])]
  } else {
    scopes = [...(value<string[]>('scopes') ?? DEFAULT_SCOPES)]
    // RFC 8628 devices sign in once and live on refresh tokens: always ask for one.
    if (!scopes.includes('offline_access')) scopes.push('offline_access')
  }
  const clientCredential: ClientCredentialConfig | undefined =
    grant === 'client_credentials'
      ? {
          secretFile: value<string>('clientCredential.secretFile'),
          certificateFile: value<string>('clientCredential.certificateFile'),
          privateKeyFile: value<string>('clientCredential.privateKeyFile'),
          privateKeyPassphraseFile: value<string>('clientCredential.privateKeyPassphraseFile'),
          sendCertificateChain: value<boolean>('clientCredential.sendCertificateChain'),
          assertionFile: value<string>('clientCredential.assertionFile'),
        }
      : undefined
  const managedIdentity: ManagedIdentityConfig | undefined =
    grant === 'managed_identity' && resource !== undefined
      ? { clientId: value<string>('managedIdentity.clientId'), resource }
      : undefined

  const mqttUrl = value<string>('mqtt.url')
  const mqtt: MqttConfig | undefined = mqttUrl
    ? {
        url: mqttUrl,
        topicPrefix: value<string>('mqtt.topicPrefix') ?? DEFAULT_TOPIC_PREFIX,
        caFile: value<string>('mqtt.caFile'),
        certFile: value<string>('mqtt.certFile'),
        keyFile: value<string>('mqtt.keyFile'),
        username: value<string>('mqtt.username'),
        password: value<string>('mqtt.password'),
        passwordFile: value<string>('mqtt.passwordFile'),
        protocolVersion: value<4 | 5>('mqtt.protocolVersion'),
        allowPair: value<boolean>('mqtt.allowPair') ?? false,
        subscriptions: value<string[]>('mqtt.subscriptions') ?? [],
      }
    : undefined
  const display: readonly DisplayName[] =
    value<DisplayName[]>('display') ?? (mqtt ? ['console', 'qr', 'mqtt'] : ['console', 'qr'])

  const deviceId = value<string>('deviceId') ?? defaultDeviceId(hostname())
  if (mqtt) checkOwnTopics(mqtt, deviceId, merged.get('mqtt.subscriptions')?.origin.label)

  const config: EdgeTokenConfig = {
    configFile,
    authority: value<string>('authority'),
    clientId: value<string>('clientId'),
    grant,
    clientCredential,
    managedIdentity,
    scopes: [...new Set(scopes)],
    clientCapabilities: value<string[]>('clientCapabilities'),
    deviceId,
    stateDir: value<string>('stateDir') ?? defaultStateDir(env),
    keyFile: value<string>('keyFile'),
    display,
    timeoutSeconds: value<number>('timeoutSeconds'),
    qrTheme: value<EdgeTokenConfig['qrTheme']>('qrTheme'),
    dpop: value<EdgeTokenConfig['dpop']>('dpop') ?? 'auto',
    logLevel: value<EdgeTokenConfig['logLevel']>('logLevel'),
    mqtt,
    telemetry: {
      endpoint: value<string>('telemetry.endpoint'),
      batchMaxRecords: value<number>('telemetry.batchMaxRecords') ?? DEFAULT_TELEMETRY.batchMaxRecords,
      lingerMs: value<number>('telemetry.lingerMs') ?? DEFAULT_TELEMETRY.lingerMs,
      spoolMaxBytes: value<number>('telemetry.spoolMaxBytes') ?? DEFAULT_TELEMETRY.spoolMaxBytes,
    },
  }
  return deepFreeze(config)
}

/**
 * The store's "authority" of managed identity tokens, which come from no configured authority:
 * the account is (this pseudo-authority, the user-assigned client id or `system-assigned`).
 */
export const MANAGED_IDENTITY_AUTHORITY = 'urn:edgetoken:managed-identity'

/**
 * The identity a sign-in needs, or a config error naming what is missing. With
 * `managed_identity`, no authority or client id is configured: the account is
 * ({@link MANAGED_IDENTITY_AUTHORITY}, the user-assigned client id or `system-assigned`).
 *
 * @param config - the loaded configuration.
 * @returns authority, client id and scopes.
 * @throws ConfigError `config: authority is not set ...` / `config: clientId is not set ...`.
 */
export function requireIdentity(config: EdgeTokenConfig): {
  authority: string
  clientId: string
  scopes: readonly string[]
} {
  if (config.grant === 'managed_identity' && config.managedIdentity !== undefined) {
    return {
      authority: MANAGED_IDENTITY_AUTHORITY,
      clientId: config.managedIdentity.clientId ?? 'system-assigned',
      scopes: config.scopes,
    }
  }
  if (config.authority === undefined) {
    throw new ConfigError('config: authority is not set (config file key authority or EDGETOKEN_AUTHORITY)', {
      key: 'authority',
    })
  }
  if (config.clientId === undefined) {
    throw new ConfigError('config: clientId is not set (config file key clientId or EDGETOKEN_CLIENT_ID)', {
      key: 'clientId',
    })
  }
  return { authority: config.authority, clientId: config.clientId, scopes: config.scopes }
}

/**
 * A device id from a host name: characters outside `[A-Za-z0-9_-]` become `-` (dots too, so a
 * fully qualified name stays one MQTT topic level).
 *
 * @param host - the host name.
 * @returns a topic-safe id of at most 64 characters, `edgetoken-device` when nothing is left.
 */
export function defaultDeviceId(host: string): string {
  const id = host
    .replace(/[^A-Za-z0-9_-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 64)
  return id.length > 0 ? id : 'edgetoken-device'
}

/**
 * The state directory when none is configured: systemd's `$STATE_DIRECTORY` (its first entry),
 * else `$XDG_DATA_HOME/edgetoken`, else `~/.local/share/edgetoken`.
 *
 * @param env - the environment.
 * @returns an absolute path.
 */
export function defaultStateDir(env: NodeJS.ProcessEnv): string {
  const systemd = env.STATE_DIRECTORY?.split(':')[0]
  if (systemd) return resolve(systemd)
  if (env.XDG_DATA_HOME) return resolve(env.XDG_DATA_HOME, 'edgetoken')
  return join(env.HOME || homedir(), '.local', 'share', 'edgetoken')
}

/**
 * The config files searched when neither `--config` nor `EDGETOKEN_CONFIG` names one, in order:
 * `$XDG_CONFIG_HOME/edgetoken/config.json` (`~/.config/…`), then `/etc/edgetoken/config.json`.
 *
 * @param env - the environment (`XDG_CONFIG_HOME`, `HOME`).
 * @returns the absolute paths; `config set` creates the first when none exists.
 */
export function configFileCandidates(env: NodeJS.ProcessEnv): string[] {
  const home = env.HOME || homedir()
  return [
    join(env.XDG_CONFIG_HOME || join(home, '.config'), 'edgetoken', 'config.json'),
    '/etc/edgetoken/config.json',
  ]
}

/**
 * The config file the other commands read: `--config`, else `EDGETOKEN_CONFIG`, else the first
 * existing of {@link configFileCandidates}.
 *
 * @param options - parsed flags (`config`).
 * @param env - the environment.
 * @param cwd - the directory a relative path is resolved against.
 * @returns the absolute path, or undefined when none is named and none exists.
 */
export async function findConfigFile(
  options: OptionValues,
  env: NodeJS.ProcessEnv,
  cwd: string,
): Promise<string | undefined> {
  const explicit = typeof options.config === 'string' ? options.config : env.EDGETOKEN_CONFIG || undefined
  if (explicit !== undefined) return resolve(cwd, explicit)
  const candidates = configFileCandidates(env)
  // Not there: the next candidate, then environment and defaults only. (existsSync: no exception
  // to build on the common path, which is the cached `token`.)
  return candidates.find((candidate) => existsSync(candidate))
}

/**
 * Reads and parses a config file (at most 1 MiB, a UTF-8 BOM ignored), with the loader's messages.
 *
 * @param file - the absolute path.
 * @returns the parsed JSON, still `unknown` (check it with `fileLayer`).
 * @throws ConfigError `config: cannot read the config file … (not found)`, `… is not valid JSON (at character N)`.
 */
export async function readConfigFile(file: string): Promise<unknown> {
  let text: string
  try {
    // Synchronous: one small file, and no fs/promises machinery on the cached `token` path.
    const bytes = readFileSync(file)
    if (bytes.length > MAX_CONFIG_BYTES) {
      throw new ConfigError(`config: ${file} is larger than 1 MiB`, { key: 'config' })
    }
    text = bytes.toString('utf8').replace(/^\uFEFF/, '')
  } catch (err) {
    if (err instanceof ConfigError) throw err
    const code = (err as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'not found' : code === 'EACCES' ? 'permission denied' : (code ?? 'error')
    throw new ConfigError(`config: cannot read the config file ${file} (${why})`, {
      key: 'config',
      cause: err,
    })
  }
  try {
    return JSON.parse(text) as unknown
  } catch (err) {
    // V8's message quotes a piece of the file, which may be a secret (mqtt.password): give only
    // the position.
    const position = /position (\d+)/.exec((err as Error).message)?.[1]
    const where = position === undefined ? '' : ` (at character ${position})`
    throw new ConfigError(`config: ${file} is not valid JSON${where}`, { key: 'config' })
  }
}

const warnedFiles = new Set<string>()

/** A config file that holds the broker password should be readable by its owner alone. */
function warnReadableSecret(file: string, warn: ((line: string) => void) | undefined): void {
  if (warnedFiles.has(file)) return
  let mode: number
  try {
    mode = statSync(file).mode
  } catch {
    return
  }
  if ((mode & 0o044) === 0) return
  warnedFiles.add(file)
  const line =
    `${file} holds mqtt.password and is readable by other users (mode ${(mode & 0o777).toString(8).padStart(4, '0')}): ` +
    'move the password to mqtt.passwordFile or the systemd credential mqtt-password, or chmod 600 the file'
  if (warn) warn(line)
  else process.stderr.write(`edgetoken: warning: ${line}\n`)
}

/**
 * A subscription that matches one of this device's own topics would deliver those messages twice
 * (MQTT 3.1.1 §3.3.5 and MQTT 5 §3.3.4 let a broker send one copy per matching subscription), and
 * login or pair messages are not sensor data: refused.
 */
function checkOwnTopics(mqtt: MqttConfig, deviceId: string, label = 'mqtt.subscriptions'): void {
  const own = ['login', 'status', 'readings', 'pair'].map((t) => `${mqtt.topicPrefix}/${deviceId}/${t}`)
  for (const filter of mqtt.subscriptions ?? []) {
    const hit = own.find((topic) => topicMatches(filter, topic))
    if (hit) {
      throw new ConfigError(
        `config: ${label} filter ${JSON.stringify(filter)} matches this device's own topic ${hit}; subscribe to narrower filters`,
        { key: 'mqtt.subscriptions' },
      )
    }
  }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}
