/**
 * The resolved configuration every command works from. Types only, so any layer may import them.
 *
 * @packageDocumentation
 */

/** A login display: the terminal text, a terminal QR code, or the MQTT companion-display relay. */
export type DisplayName = 'console' | 'qr' | 'mqtt'

/** Every display name, in the order they are shown. */
export const DISPLAY_NAMES: readonly DisplayName[] = Object.freeze(['console', 'qr', 'mqtt'])

/**
 * How the terminal QR code is drawn: `auto` paints black on white on a colour terminal (any theme),
 * else plain characters for a dark background; `dark` / `light`: plain characters for a terminal
 * with that background colour.
 */
export type QrTheme = 'auto' | 'dark' | 'light'

/**
 * Whether sign-ins bind tokens to a DPoP key (RFC 9449): `auto` when the IdP advertises
 * `dpop_signing_alg_values_supported`, `true` always, `false` never.
 */
export type DPoPSetting = 'auto' | boolean

/** Every QR theme. */
export const QR_THEMES: readonly QrTheme[] = Object.freeze(['auto', 'dark', 'light'])

/**
 * What the daemon (`run`) logs on stderr: `info` changes of state, problems and a summary every
 * ten minutes; `debug` adds a line per uploaded batch and per renewal. `--debug` implies `debug`.
 */
export type LogLevel = 'info' | 'debug'

/** Every log level. */
export const LOG_LEVELS: readonly LogLevel[] = Object.freeze(['info', 'debug'])

/**
 * How this machine gets its tokens: `device_code` (a user signs in once, refresh tokens after),
 * or, for a machine with no user, `client_credentials` (RFC 6749 §4.4 with a secret, a
 * certificate or a federated assertion) or `managed_identity` (Azure Arc or an Azure VM).
 */
export type GrantName = 'device_code' | 'client_credentials' | 'managed_identity'

/** Every grant name. */
export const GRANT_NAMES: readonly GrantName[] = Object.freeze([
  'device_code',
  'client_credentials',
  'managed_identity',
])

/** The credential of `client_credentials`: one kind, files only (never the secret itself). */
export interface ClientCredentialConfig {
  /** File holding the client secret (one trailing newline stripped), absolute. */
  readonly secretFile?: string | undefined
  /** PEM certificate (optionally followed by its chain) of `privateKeyFile`, absolute. */
  readonly certificateFile?: string | undefined
  /** PEM private key for `private_key_jwt`, absolute. */
  readonly privateKeyFile?: string | undefined
  /** File holding the passphrase of an encrypted `privateKeyFile`, absolute. */
  readonly privateKeyPassphraseFile?: string | undefined
  /** Send the chain as `x5c` (Entra ID subject name and issuer authentication). Default false. */
  readonly sendCertificateChain?: boolean | undefined
  /** File holding a federated workload-identity JWT, read again for every request, absolute. */
  readonly assertionFile?: string | undefined
}

/** The managed identity of `managed_identity`. */
export interface ManagedIdentityConfig {
  /** A user-assigned identity's client id; default the system-assigned identity. */
  readonly clientId?: string | undefined
  /** The resource (audience) tokens are for, e.g. `api://telemetry` or `https://management.azure.com`. */
  readonly resource: string
}

/** MQTT connection settings (the companion-display relay, presence, and the daemon's ingest). */
export interface MqttConfig {
  /** `mqtt://host[:port]` or `mqtts://host[:port]`. */
  readonly url: string
  /** The first topic levels; topics are `<topicPrefix>/<deviceId>/...`. Default `edgetoken`. */
  readonly topicPrefix: string
  /** PEM file of the CA that signed the broker's certificate (mqtts only), absolute. */
  readonly caFile?: string | undefined
  /** PEM client certificate for mutual TLS (mqtts only), absolute; comes with `keyFile`. */
  readonly certFile?: string | undefined
  /** PEM private key of `certFile`, absolute. */
  readonly keyFile?: string | undefined
  /** Broker username. */
  readonly username?: string | undefined
  /** Broker password (needs `username`; plain `mqtt://` only to a loopback broker). */
  readonly password?: string | undefined
  /**
   * File holding the broker password (one trailing newline stripped), absolute; read when the
   * client connects. Set from `mqtt.passwordFile`, or the systemd credential
   * `$CREDENTIALS_DIRECTORY/mqtt-password`. Never together with `password`.
   */
  readonly passwordFile?: string | undefined
  /** MQTT protocol version: 5 (default, falls back to 3.1.1 when the broker refuses it) or 4 (3.1.1). */
  readonly protocolVersion?: 4 | 5 | undefined
  /** Whether a companion display may ask for a new sign-in on `<prefix>/<deviceId>/pair`. Default false. */
  readonly allowPair: boolean
  /**
   * Topic filters of existing firmware (`zigbee2mqtt/+`, `tele/+/SENSOR`) the daemon subscribes to
   * at QoS 1; each JSON-object message is spooled as `{"topic","received_at","payload"}`. None
   * matches this device's own topics. Default none.
   */
  readonly subscriptions?: readonly string[] | undefined
}

/** Telemetry upload settings. */
export interface TelemetryConfig {
  /** The protected API's ingest URL (https, or http to loopback). */
  readonly endpoint?: string | undefined
  /** Most records in one uploaded batch. Default 500. */
  readonly batchMaxRecords: number
  /** How long a partial batch waits for more records before it is sent, ms. Default 1000. */
  readonly lingerMs: number
  /** Cap of the on-disk spool, bytes; the oldest records are dropped (and counted) past it. Default 64 MiB. */
  readonly spoolMaxBytes: number
}

/**
 * The resolved, validated, frozen configuration: flags over `EDGETOKEN_*` environment over the
 * config file over defaults.
 */
export interface EdgeTokenConfig {
  /** The config file that was read (absolute), when one was. */
  readonly configFile?: string | undefined
  /** The issuer URL (https, or http to a loopback host). */
  readonly authority?: string | undefined
  /** The OAuth client id. */
  readonly clientId?: string | undefined
  /** How tokens are obtained. Default `device_code`. */
  readonly grant: GrantName
  /** The client credential (with `client_credentials`). */
  readonly clientCredential?: ClientCredentialConfig | undefined
  /** The managed identity (with `managed_identity`). */
  readonly managedIdentity?: ManagedIdentityConfig | undefined
  /**
   * Scopes to request; with `device_code` always includes `offline_access`; with
   * `client_credentials` as configured; with `managed_identity` the resource.
   */
  readonly scopes: readonly string[]
  /**
   * Client capabilities sent as the `xms_cc` claims request with every token request (`cp1`:
   * Entra ID then issues Continuous Access Evaluation tokens, and its APIs send claims challenges).
   * Default none.
   */
  readonly clientCapabilities?: readonly string[] | undefined
  /** This device's id: MQTT topic level and telemetry `device_id` (`[A-Za-z0-9._-]`). */
  readonly deviceId: string
  /** Where the token store and the spool live (absolute). */
  readonly stateDir: string
  /** The key file (absolute), when configured; else the store looks at systemd credentials, then the state dir. */
  readonly keyFile?: string | undefined
  /** Displays `login` uses. Empty means none (`--display none`). */
  readonly display: readonly DisplayName[]
  /** `login` gives up after this many seconds, when set. */
  readonly timeoutSeconds?: number | undefined
  /** How `login` draws the QR code. Default `auto`. */
  readonly qrTheme?: QrTheme | undefined
  /** DPoP-bound tokens (RFC 9449) at the next sign-in. Default `auto`. */
  readonly dpop?: DPoPSetting | undefined
  /** What `run` logs on stderr. Default `info`. */
  readonly logLevel?: LogLevel | undefined
  /** MQTT settings, when a broker is configured. */
  readonly mqtt?: MqttConfig | undefined
  /** Telemetry settings (always filled by `loadConfig`). */
  readonly telemetry?: TelemetryConfig | undefined
}

/** Parsed command-line option values (strings, booleans, repeated strings), flags only. */
export type OptionValues = Readonly<Record<string, string | boolean | string[] | undefined>>
