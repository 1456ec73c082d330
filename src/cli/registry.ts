/**
 * The command table. Options are declared here, not in the command modules, so argv can be parsed
 * and checked without importing any command: each command's module (and whatever heavy library it
 * needs) is loaded only when that command runs.
 */
import type { CommandModule, OptionSpec } from './context.js'

/** A registered command. */
export interface CommandEntry {
  /** One line for the command list. */
  readonly summary: string
  /** Options this command accepts besides the global ones. */
  readonly options: OptionSpec
  /** How many positional arguments it takes after its name; more are a usage error. Default 0. */
  readonly maxArgs?: number
  /** Loads the command's module. */
  readonly load: () => Promise<{ default: CommandModule }>
}

/** Options every command accepts. */
export const GLOBAL_OPTIONS: OptionSpec = {
  config: { type: 'string' },
  'state-dir': { type: 'string' },
  json: { type: 'boolean' },
  debug: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
}

/** Short letters besides the declared `short` ones: `-v` is `--version` too, as people expect. */
export const SHORT_ALIASES: Readonly<Record<string, string>> = { v: 'version' }

/**
 * The environment variable of each option that is not read by configuration loading or by its
 * command (those are: `--config`, `--state-dir`, `--display`, `--timeout-seconds`, `--qr-theme` and
 * `serve-api`'s options; `--scope` overrides the configured scopes, so its variable is `EDGETOKEN_SCOPES`).
 * A flag wins over its variable.
 */
export const OPTION_ENV: Readonly<Record<string, string>> = {
  json: 'EDGETOKEN_JSON',
  debug: 'EDGETOKEN_DEBUG',
  'min-ttl-seconds': 'EDGETOKEN_MIN_TTL_SECONDS',
  'force-refresh': 'EDGETOKEN_FORCE_REFRESH',
  'on-invalid': 'EDGETOKEN_ON_INVALID',
  browser: 'EDGETOKEN_LOGIN_BROWSER',
  'no-open': 'EDGETOKEN_NO_OPEN',
  claims: 'EDGETOKEN_CLAIMS',
}

/** Every command of the contract, plus `serve-api`. */
export const COMMANDS: Readonly<Record<string, CommandEntry>> = {
  login: {
    summary: 'sign this device in with the device authorization grant (RFC 8628), or --browser',
    options: {
      display: { type: 'string' },
      'timeout-seconds': { type: 'string' },
      'qr-theme': { type: 'string' },
      browser: { type: 'boolean' },
      'no-open': { type: 'boolean' },
    },
    load: () => import('./commands/login.js'),
  },
  token: {
    summary: 'print a valid access token, refreshing silently when needed',
    options: {
      scope: { type: 'string', multiple: true },
      'min-ttl-seconds': { type: 'string' },
      'force-refresh': { type: 'boolean' },
      claims: { type: 'string' },
    },
    load: () => import('./commands/token.js'),
  },
  proof: {
    summary: 'print a DPoP proof for the current token, for scripts that call a DPoP API',
    options: {
      method: { type: 'string' },
      url: { type: 'string' },
      nonce: { type: 'string' },
    },
    load: () => import('./commands/proof.js'),
  },
  status: {
    summary: 'show the account, token expiry and telemetry spool',
    options: {},
    load: () => import('./commands/status.js'),
  },
  logout: {
    summary: "revoke and remove the account's tokens",
    options: {},
    load: () => import('./commands/logout.js'),
  },
  send: {
    summary: 'append NDJSON records from stdin to the durable spool',
    options: { 'on-invalid': { type: 'string' } },
    load: () => import('./commands/send.js'),
  },
  upload: {
    summary: 'upload everything pending in the spool, then exit',
    options: {},
    load: () => import('./commands/upload.js'),
  },
  run: {
    summary: 'the daemon: silent renewal, MQTT ingest and upload until SIGTERM',
    options: {},
    load: () => import('./commands/run.js'),
  },
  config: {
    summary: 'get, set, unset or list keys of the config file, or print its path',
    options: {},
    // `set KEY VALUE [KEY VALUE]...`: up to 32 keys in one validated, atomic write.
    maxArgs: 65,
    load: () => import('./commands/config.js'),
  },
  doctor: {
    summary: 'check that this gateway is ready: config, clock, key, state dir, IdP, broker, API',
    options: {},
    load: () => import('./commands/doctor.js'),
  },
  'serve-api': {
    summary: 'run the reference protected telemetry API (validates bearer JWTs)',
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      issuer: { type: 'string' },
      audience: { type: 'string' },
    },
    load: () => import('./commands/serve-api.js'),
  },
}
