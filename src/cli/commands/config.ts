/**
 * `edgetoken config get KEY | set KEY VALUE [KEY VALUE]... | unset KEY... | list | path`: edits
 * the config file the other commands read, for provisioning scripts that would otherwise write
 * JSON by hand.
 *
 * Built on `conf` (with `config/schema.json` as its schema and dot-notation keys), which is
 * imported by this command only: its `atomically` write loads `when-exit`, whose signal handlers
 * would turn one Ctrl-C into two in `login`, `run` or the cached `token` (the reason the token
 * store does not use it; test/cli/imports.test.ts proves those commands never load it).
 *
 * Every write is: take a lock beside the file (concurrent `config set` calls lose no update),
 * read the file, apply the change in memory, validate the result with the loader's own rules (so
 * the one-line error is exactly what every other command would say), then conf validates it
 * against the JSON schema and writes it (temporary file, fsync, rename), and we fsync the
 * directory, which conf's write does not do. A rejected change leaves the file byte-identical.
 */
import { existsSync, mkdirSync, readFileSync, realpathSync, statSync } from 'node:fs'
import { basename, dirname, extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { configFileCandidates, findConfigFile, readConfigFile } from '../../config/load.js'
import { assertKnownKey, fileLayer, SECTIONS } from '../../config/rules.js'
import { ConfigError, EdgeTokenError } from '../../errors.js'
import { fsyncDirectory } from '../../lib/fs/durable-file.js'
import { acquireFileLock } from '../../lib/fs/file-lock.js'
import { isObject, type JsonObject } from '../../lib/validate.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'

const HELP = `Usage: edgetoken config get KEY
       edgetoken config set KEY VALUE [KEY VALUE]...
       edgetoken config unset KEY...
       edgetoken config list [--json]
       edgetoken config path

Edits the config file the other commands read: --config FILE, else EDGETOKEN_CONFIG, else the
first existing of $XDG_CONFIG_HOME/edgetoken/config.json (~/.config/...) and
/etc/edgetoken/config.json; set creates the first when none exists.

KEY is a dotted key of config/schema.json (mqtt.url, telemetry.endpoint), or a section (mqtt).
VALUE is JSON when it parses as JSON, else a string:
  edgetoken config set scopes '["openid","telemetry:write"]'
  edgetoken config set mqtt.protocolVersion 5
  edgetoken config set clientId '"1234"'     (a string of digits must be quoted as JSON)
Several KEY VALUE pairs are validated and written together: keys that need each other
(mqtt.certFile and mqtt.keyFile, grant and clientCredential) go in one call.

The whole result is validated with the rules every command loads the file with, then against the
JSON schema, before anything is written: a bad key or value exits 2 with one line naming it, and
the file is left byte-identical. Writes are atomic and durable (temporary file, fsync, rename,
directory fsync) under a lock, so concurrent calls lose no update. The file keeps its mode; a new
one holding a secret path is created 0600, and a file holding mqtt.password is made 0600.

get prints a string as is and any other value as JSON (nothing when unset; --json: JSON, null);
list prints key=value lines (--json: the file's object), mqtt.password shown as "<set>";
path prints the file's path (the one set would create when none exists).

Exit codes: 0 ok, 2 usage or config error (the message names the key), 1 the write failed.`

/** Keys whose value is a path to a secret: a new file holding one is created 0600. */
const SECRET_PATH = /^(mqtt\.passwordFile|clientCredential\.)/
/** The one key whose value is itself a secret. */
const SECRET_VALUE = 'mqtt.password'
/** How long `set` waits for another `config set` to finish. */
const LOCK_TIMEOUT_MS = 30_000

function usage(message: string): never {
  throw new EdgeTokenError('ERR_USAGE', `${message}. Run 'edgetoken config --help'.`)
}

/**
 * VALUE as the contract reads it: JSON when it parses, else the text itself.
 *
 * @param text - the argument.
 * @returns the value.
 */
export function parseValue(text: string): unknown {
  try {
    return JSON.parse(text) as unknown
  } catch {
    return text
  }
}

/** `get`'s output: a string as is, anything else as JSON. */
function show(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value)
}

/** The value at a dotted key of a config object (two levels at most: `section.key`). */
function lookup(data: JsonObject, key: string): unknown {
  const [head = '', tail] = splitKey(key)
  const top = data[head]
  if (tail === undefined) return top
  return isObject(top) ? top[tail] : undefined
}

function splitKey(key: string): [string, string | undefined] {
  const dot = key.indexOf('.')
  return dot < 0 || !SECTIONS.includes(key.slice(0, dot))
    ? [key, undefined]
    : [key.slice(0, dot), key.slice(dot + 1)]
}

/** A copy of `data` with `key` set (`undefined`: removed; a section left empty is removed too). */
function withValue(data: JsonObject, key: string, value: unknown): JsonObject {
  const next: JsonObject = structuredClone(data)
  const [head, tail] = splitKey(key)
  if (tail === undefined) {
    if (value === undefined) delete next[head]
    else next[head] = value
    return next
  }
  const section: JsonObject = isObject(next[head]) ? next[head] : {}
  if (value === undefined) delete section[tail]
  else section[tail] = value
  if (Object.keys(section).length === 0) delete next[head]
  else next[head] = section
  return next
}

/** The file this command edits: the one the other commands read, else the first candidate. */
async function configPath(ctx: CommandContext): Promise<string> {
  const found = await findConfigFile(ctx.options, ctx.env, process.cwd())
  return found ?? (configFileCandidates(ctx.env)[0] as string)
}

/** The file's content, checked as the loader checks it; `{}` when there is no file. */
async function readChecked(file: string): Promise<JsonObject> {
  if (!existsSync(file)) return {}
  const data = await readConfigFile(file)
  // Same words as every other command: an edit starts from a file they would load.
  fileLayer(data, dirname(file))
  return data as JsonObject
}

/** `config/schema.json` of this package: three levels up from src/, four from dist/lib/. */
function loadSchema(): JsonObject {
  const here = dirname(fileURLToPath(import.meta.url))
  for (const up of ['../../..', '../../../..']) {
    const candidate = join(here, up, 'config', 'schema.json')
    if (existsSync(candidate)) return JSON.parse(readFileSync(candidate, 'utf8')) as JsonObject
  }
  throw new EdgeTokenError('ERR_INTERNAL', 'config/schema.json is missing from the installation')
}

/**
 * The mode the written file gets: never wider than it was (a temporary file must not widen a 0600
 * file to the umask's 0644), never writable by others; 0600 for a file holding `mqtt.password`
 * (the loader warns about any other mode), and for a new file holding a secret path. An existing
 * file holding only paths keeps its mode: the systemd unit's DynamicUser reads
 * /etc/edgetoken/config.json, and a root-only file would stop the service.
 */
function fileMode(file: string, next: JsonObject): number {
  const keys = Object.entries(next).flatMap(([k, v]) =>
    SECTIONS.includes(k) && isObject(v) ? Object.keys(v).map((s) => `${k}.${s}`) : [k],
  )
  if (keys.includes(SECRET_VALUE)) return 0o600
  let existing: number | undefined
  try {
    existing = statSync(file).mode & 0o7777
  } catch {
    existing = undefined
  }
  if (existing !== undefined) return existing & ~0o022
  // conf's default: 0666, which the umask narrows.
  return keys.some((k) => SECRET_PATH.test(k)) ? 0o600 : 0o666
}

/** conf on `file`, with the JSON schema as its schema (imported only when a file is read or written). */
async function openConf(file: string, mode: number) {
  const { default: Conf } = await import('conf')
  const { properties, ...rootSchema } = loadSchema()
  const extension = extname(file)
  return new Conf<JsonObject>({
    cwd: dirname(file),
    configName: basename(file, extension),
    fileExtension: extension.replace(/^\./, ''),
    projectSuffix: '',
    // biome-ignore lint/suspicious/noExplicitAny: conf's schema types want a typed store
    schema: properties as any,
    // biome-ignore lint/suspicious/noExplicitAny: as above
    rootSchema: rootSchema as any,
    accessPropertiesByDotNotation: true,
    clearInvalidConfig: false,
    configFileMode: mode,
    // The house style of the example files, ending with a newline.
    serialize: (value) => `${JSON.stringify(value, null, 2)}\n`,
  })
}

/** conf's schema violation (should the schema and the loader ever disagree), as a config error. */
function schemaError(err: unknown): never {
  const message = err instanceof Error ? err.message : String(err)
  if (message.startsWith('Config schema violation:')) {
    throw new ConfigError(`config: ${message.slice('Config schema violation:'.length).trim()}`)
  }
  throw err
}

/**
 * Validates a would-be config object as the loader would; when a VALUE that parsed as JSON fails
 * but its text would pass, says how to pass the text (never echoing it: it may be a password).
 */
function checkResult(next: JsonObject, dir: string, texts: ReadonlyMap<string, string>): void {
  try {
    fileLayer(next, dir)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    const key = err.key
    const text = key === undefined ? undefined : texts.get(key)
    if (key !== undefined && text !== undefined && typeof parseValue(text) !== 'string') {
      try {
        fileLayer(withValue(next, key, text), dir)
      } catch {
        throw err
      }
      throw new ConfigError(`${err.message} (for the text, pass the value as a JSON string in quotes)`, {
        key,
      })
    }
    throw err
  }
}

async function edit(
  ctx: CommandContext,
  change: (data: JsonObject) => { next: JsonObject; texts: ReadonlyMap<string, string> },
): Promise<void> {
  const file = await configPath(ctx)
  const dir = dirname(file)
  try {
    mkdirSync(dir, { recursive: true })
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    throw new EdgeTokenError('ERR_IO', `cannot create the directory ${dir} (${code})`, { cause: err })
  }
  const lock = await acquireFileLock(`${file}.lock`, {
    what: 'config file',
    timeoutMs: LOCK_TIMEOUT_MS,
    signal: ctx.signal,
  })
  try {
    const current = await readChecked(file)
    const { next, texts } = change(current)
    if (existsSync(file) && JSON.stringify(next) === JSON.stringify(current)) return
    checkResult(next, dir, texts)
    const mode = fileMode(file, next)
    const conf = await openConf(file, mode)
    try {
      conf.store = next
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (typeof code !== 'string') schemaError(err)
      throw new EdgeTokenError('ERR_IO', `cannot write the config file ${file} (${code})`, { cause: err })
    }
    // atomically fsyncs the file before its rename, not the directory: the rename itself could be
    // lost on a power cut. (It writes in the directory of the file's real path.)
    await fsyncDirectory(dirname(realpathSync(file)))
    if (mode === 0o600 && lookup(next, SECRET_VALUE) !== undefined) {
      ctx.warn(
        `${file} holds mqtt.password and is now mode 0600: a service running as another user (systemd DynamicUser) cannot read it; prefer mqtt.passwordFile or the systemd credential mqtt-password`,
      )
    }
  } finally {
    await lock.release()
  }
}

function set(ctx: CommandContext, pairs: readonly string[]): Promise<void> {
  if (pairs.length === 0 || pairs.length % 2 !== 0) usage('config set takes KEY VALUE pairs')
  const texts = new Map<string, string>()
  for (let i = 0; i < pairs.length; i += 2) {
    const key = pairs[i] as string
    assertKnownKey(key)
    texts.set(key, pairs[i + 1] as string)
  }
  return edit(ctx, (data) => {
    let next = data
    for (const [key, text] of texts) next = withValue(next, key, parseValue(text))
    return { next, texts }
  })
}

function unset(ctx: CommandContext, keys: readonly string[]): Promise<void> {
  if (keys.length === 0) usage('config unset takes a KEY')
  for (const key of keys) assertKnownKey(key)
  return edit(ctx, (data) => {
    let next = data
    for (const key of keys) next = withValue(next, key, undefined)
    return { next, texts: new Map() }
  })
}

/** Reads the file through conf (which validates it against the schema too). */
async function readStore(file: string): Promise<JsonObject> {
  // No file, nothing to read: conf would create the directory.
  if (!existsSync(file)) return {}
  await readChecked(file)
  try {
    return (await openConf(file, 0o666)).store
  } catch (err) {
    return schemaError(err)
  }
}

async function get(ctx: CommandContext, key: string): Promise<void> {
  assertKnownKey(key)
  const file = await configPath(ctx)
  const data = await readStore(file)
  const value = lookup(data, key)
  if (ctx.json) ctx.stdout.write(`${JSON.stringify(value ?? null)}\n`)
  else if (value !== undefined) ctx.stdout.write(`${show(value)}\n`)
}

async function list(ctx: CommandContext): Promise<void> {
  const data = await readStore(await configPath(ctx))
  // A password is shown only when asked for by name (`config get mqtt.password`): `list` output
  // ends up in provisioning logs.
  const shown = lookup(data, SECRET_VALUE) === undefined ? data : withValue(data, SECRET_VALUE, '<set>')
  if (ctx.json) {
    ctx.stdout.write(`${JSON.stringify(shown)}\n`)
    return
  }
  for (const [k, v] of Object.entries(shown)) {
    if (SECTIONS.includes(k) && isObject(v)) {
      for (const [s, w] of Object.entries(v)) ctx.stdout.write(`${k}.${s}=${show(w)}\n`)
    } else {
      ctx.stdout.write(`${k}=${show(v)}\n`)
    }
  }
}

async function run(ctx: CommandContext): Promise<number> {
  const [action, ...rest] = ctx.args
  switch (action) {
    case 'get':
      if (rest.length !== 1) usage('config get takes one KEY')
      await get(ctx, rest[0] as string)
      break
    case 'set':
      await set(ctx, rest)
      break
    case 'unset':
      await unset(ctx, rest)
      break
    case 'list':
      if (rest.length !== 0) usage('config list takes no KEY')
      await list(ctx)
      break
    case 'path':
      if (rest.length !== 0) usage('config path takes no KEY')
      ctx.stdout.write(`${await configPath(ctx)}\n`)
      break
    case undefined:
      usage('config needs an action: get, set, unset, list or path')
      break
    default:
      usage(`unknown config action '${action.slice(0, 40)}': use get, set, unset, list or path`)
  }
  return ExitCode.ok
}

const command: CommandModule = { help: HELP, run }
export default command
