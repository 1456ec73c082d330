/**
 * `doctor`'s checks of this machine alone: the store key, the state directory, the client
 * credential files, the clock against the build date and the servers' `Date`, and the proxy
 * settings. Nothing is created, generated or read beyond a file's metadata: a key's or a
 * secret's bytes never leave its file.
 *
 * @internal
 */
import { constants, type Stats } from 'node:fs'
import { lstat, open, stat } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { BUILD_TIME, checkClock } from '../../agent/clock.js'
import { isoSeconds } from '../../lib/time.js'
import { isLoopbackHost } from '../../lib/url.js'
import { CREDENTIAL_NAME, GENERATED_KEY_NAME, MIN_KEY_BYTES } from '../../store/keys.js'
import { STORE_FILE } from '../../store/token-store.js'
import { type CheckResult, type DoctorInput, describe, result } from './types.js'

/** Server clocks further off than this are worth a warning, s. */
export const CLOCK_WARN_SECONDS = 60
/** Further off than this, token lifetimes and signed assertions go wrong, s. */
export const CLOCK_FAIL_SECONDS = 300

function octal(mode: number): string {
  return (mode & 0o777).toString(8).padStart(4, '0')
}

async function statOrCode(path: string): Promise<Stats | string> {
  try {
    return await stat(path)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'error'
  }
}

/** Opens a file for reading and closes it at once: is it readable by this user? (Never reads it.) */
async function readable(path: string): Promise<string | undefined> {
  try {
    // O_NONBLOCK: a FIFO must not block the check.
    const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY)
    await handle.close()
    return undefined
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'error'
  }
}

/**
 * The store key: where it comes from (as the store looks for it: `keyFile`/`EDGETOKEN_KEY_FILE`,
 * the systemd credential `edgetoken.key`, `store.key` in the state directory), that it holds at
 * least 32 bytes, is readable, and is not open to group or others.
 *
 * @param input - config and environment.
 * @returns the verdict.
 */
export async function checkKey(input: DoctorInput): Promise<CheckResult> {
  const { config, env } = input
  const configured = config.keyFile ?? (env.EDGETOKEN_KEY_FILE || undefined)
  let path: string
  let source: string
  if (configured !== undefined) {
    path = resolve(configured)
    source = config.keyFile !== undefined ? 'keyFile' : 'EDGETOKEN_KEY_FILE'
  } else if (
    env.CREDENTIALS_DIRECTORY &&
    typeof (await statOrCode(join(env.CREDENTIALS_DIRECTORY, CREDENTIAL_NAME))) !== 'string'
  ) {
    path = join(env.CREDENTIALS_DIRECTORY, CREDENTIAL_NAME)
    source = 'the systemd credential'
  } else {
    path = join(config.stateDir, GENERATED_KEY_NAME)
    source = 'the generated key'
    const found = await statOrCode(path)
    if (found === 'ENOENT') {
      const storeExists = typeof (await statOrCode(join(config.stateDir, STORE_FILE))) !== 'string'
      if (storeExists) {
        return result(
          'key',
          'fail',
          `the token store exists but its key ${path} is missing`,
          'restore the key that wrote the store (EDGETOKEN_KEY_FILE or the systemd credential edgetoken.key), or remove the store and sign in again',
        )
      }
      return result(
        'key',
        'warn',
        `no key yet: one will be generated at ${path} on first use (a key next to the data protects only against other users)`,
        'provision one: sudo systemd/install.sh (systemd credential edgetoken.key), or set EDGETOKEN_KEY_FILE',
      )
    }
  }
  const found = await statOrCode(path)
  if (typeof found === 'string') {
    return result(
      'key',
      'fail',
      `${source} ${path} cannot be used (${found})`,
      'restore the key file or point keyFile / EDGETOKEN_KEY_FILE at it (a new key cannot open an existing store)',
    )
  }
  if (!found.isFile())
    return result(
      'key',
      'fail',
      `${source} ${path} is not a regular file`,
      'point the key setting at the key file',
    )
  const denied = await readable(path)
  if (denied !== undefined) {
    return result(
      'key',
      'fail',
      `${source} ${path} cannot be read (${denied})`,
      `run as the service's user, or let it read ${path}`,
    )
  }
  if (found.size < MIN_KEY_BYTES) {
    return result(
      'key',
      'fail',
      `${source} ${path} holds ${found.size} bytes; at least ${MIN_KEY_BYTES} are needed`,
      'restore the full key file',
    )
  }
  if ((found.mode & 0o077) !== 0) {
    return result(
      'key',
      'fail',
      `${source} ${path} is accessible by group or others (mode ${octal(found.mode)})`,
      `chmod 600 ${path}`,
    )
  }
  return result('key', 'ok', `${source} ${path} (mode ${octal(found.mode)}, ${found.size} bytes)`)
}

/**
 * The state directory, judged as the store judges it before use (without creating it): a real
 * directory (or a root-owned link, as systemd's `StateDirectory=` with `DynamicUser=` makes),
 * owned by this user, not writable by group or others.
 *
 * @param input - config.
 * @returns the verdict.
 */
export async function checkStateDir(input: DoctorInput): Promise<CheckResult> {
  const dir = input.config.stateDir
  let stats: Stats
  try {
    stats = await lstat(dir)
    if (stats.isSymbolicLink()) {
      if (stats.uid !== 0)
        return result('state_dir', 'fail', `${dir} is a symbolic link`, 'point stateDir at a real directory')
      stats = await stat(dir)
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    if (code !== 'ENOENT')
      return result(
        'state_dir',
        'fail',
        `${dir} cannot be examined (${code})`,
        `check the permissions of ${dirname(dir)}`,
      )
    // Created (0700) on first use: the nearest existing parent must let this user create it.
    let parent = dirname(dir)
    while (typeof (await statOrCode(parent)) === 'string' && dirname(parent) !== parent)
      parent = dirname(parent)
    try {
      const handle = await open(parent, constants.O_RDONLY | constants.O_DIRECTORY)
      await handle.close()
    } catch (e) {
      return result(
        'state_dir',
        'fail',
        `${dir} does not exist and ${parent} cannot be read (${describe(e)})`,
        'create it (mode 0700) for the service user',
      )
    }
    return result('state_dir', 'ok', `${dir} does not exist yet; it is created (mode 0700) on first use`)
  }
  if (!stats.isDirectory())
    return result('state_dir', 'fail', `${dir} is not a directory`, 'point stateDir at a directory')
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined
  if (uid !== undefined && stats.uid !== uid) {
    return result(
      'state_dir',
      'fail',
      `${dir} belongs to another user (uid ${stats.uid})`,
      `run as that user, or chown the directory to uid ${uid}`,
    )
  }
  if ((stats.mode & 0o022) !== 0) {
    return result(
      'state_dir',
      'fail',
      `${dir} is writable by group or others (mode ${octal(stats.mode)})`,
      `chmod 700 ${dir}`,
    )
  }
  if ((stats.mode & 0o077) !== 0) {
    return result(
      'state_dir',
      'warn',
      `${dir} is readable by group or others (mode ${octal(stats.mode)}); its files are 0600`,
      `chmod 700 ${dir}`,
    )
  }
  return result('state_dir', 'ok', `${dir} (mode ${octal(stats.mode)})`)
}

/**
 * The files of the `client_credentials` credential: present, regular, readable, and the secret
 * ones (secret, private key, passphrase) closed to group and others.
 *
 * @param input - config.
 * @returns the verdict, or undefined for another grant.
 */
export async function checkCredential(input: DoctorInput): Promise<CheckResult | undefined> {
  const credential = input.config.clientCredential
  if (input.config.grant !== 'client_credentials' || credential === undefined) return undefined
  const files: [string, string | undefined, boolean][] = [
    ['clientCredential.secretFile', credential.secretFile, true],
    ['clientCredential.privateKeyFile', credential.privateKeyFile, true],
    ['clientCredential.privateKeyPassphraseFile', credential.privateKeyPassphraseFile, true],
    ['clientCredential.certificateFile', credential.certificateFile, false],
    ['clientCredential.assertionFile', credential.assertionFile, false],
  ]
  const named: string[] = []
  let warning: CheckResult | undefined
  for (const [key, path, secret] of files) {
    if (path === undefined) continue
    const found = await statOrCode(path)
    if (typeof found === 'string')
      return result(
        'credential',
        'fail',
        `${key} ${path} cannot be used (${found})`,
        `put the file there, or: edgetoken config set ${key} PATH`,
      )
    if (!found.isFile())
      return result(
        'credential',
        'fail',
        `${key} ${path} is not a regular file`,
        `edgetoken config set ${key} PATH`,
      )
    const denied = await readable(path)
    if (denied !== undefined)
      return result(
        'credential',
        'fail',
        `${key} ${path} cannot be read (${denied})`,
        `run as the service's user, or let it read ${path}`,
      )
    if (secret && (found.mode & 0o077) !== 0) {
      warning ??= result(
        'credential',
        'warn',
        `${key} ${path} is accessible by group or others (mode ${octal(found.mode)})`,
        `chmod 600 ${path}`,
      )
    }
    named.push(key.slice('clientCredential.'.length))
  }
  return warning ?? result('credential', 'ok', `client_credentials with ${named.join(', ')}`)
}

/**
 * The clock: not before this build (a Pi without a real-time clock before NTP), and within a few
 * minutes of the servers' `Date` headers (RFC 9110 §6.6.1) when any answered.
 *
 * @param dates - `Date` header values the network checks received.
 * @param now - this machine's time, ms.
 * @returns the verdict.
 */
export function checkClockAgainst(dates: readonly string[], now: number = Date.now()): CheckResult {
  if (checkClock(now) !== 'ok') {
    return result(
      'clock',
      'fail',
      `the system clock reads ${isoSeconds(now)}, before this build (${BUILD_TIME})`,
      'enable time synchronisation (systemd-timesyncd) and wait for it',
    )
  }
  const skews = dates
    .map((d) => Date.parse(d))
    .filter((t) => Number.isFinite(t))
    .map((t) => Math.round((now - t) / 1000))
  if (skews.length === 0)
    return result('clock', 'ok', `${isoSeconds(now)} (no server answered with a Date to compare)`)
  // The smallest disagreement: one server with a wrong clock must not blame ours.
  const skew = skews.reduce((a, b) => (Math.abs(b) < Math.abs(a) ? b : a))
  const off = `${Math.abs(skew)} s ${skew > 0 ? 'ahead of' : 'behind'} the servers`
  if (Math.abs(skew) > CLOCK_FAIL_SECONDS)
    return result(
      'clock',
      'fail',
      `${isoSeconds(now)} is ${off}`,
      'enable time synchronisation (systemd-timesyncd, chrony) and check its servers',
    )
  if (Math.abs(skew) > CLOCK_WARN_SECONDS)
    return result('clock', 'warn', `${isoSeconds(now)} is ${off}`, 'check time synchronisation (timedatectl)')
  return result('clock', 'ok', `${isoSeconds(now)}, within ${Math.max(1, Math.abs(skew))} s of the servers`)
}

/** A proxy URL as it may be shown: host and port, never its credentials. */
function proxyHost(url: URL): string {
  return `${url.hostname}:${url.port || (url.protocol === 'https:' ? '443' : '80')}`
}

/**
 * Whether `NO_PROXY` exempts a host, as undici's `EnvHttpProxyAgent` reads it: `*`, or entries
 * (optionally with a port) matching the host or a parent domain (`example.com`, `.example.com`).
 *
 * @param noProxy - the `NO_PROXY` value.
 * @param url - the target.
 * @returns true when the target is reached directly.
 */
export function noProxyMatches(noProxy: string, url: URL): boolean {
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, '')
  const port = url.port || (url.protocol === 'https:' ? '443' : '80')
  for (const raw of noProxy.split(/[\s,]+/)) {
    const entry = raw.trim().toLowerCase()
    if (entry === '') continue
    if (entry === '*') return true
    const m = /^(.*?)(?::(\d+))?$/.exec(entry)
    const name = (m?.[1] ?? entry).replace(/^\*?\./, '')
    if (m?.[2] !== undefined && m[2] !== port) continue
    if (host === name || host.endsWith(`.${name}`)) return true
  }
  return false
}

/**
 * The HTTP proxy settings in effect for the identity provider and the telemetry API (MQTT never
 * goes through a proxy; loopback and link-local hosts never do).
 *
 * @param input - config and environment.
 * @param targets - the URLs the other checks reach, with what they are.
 * @returns the verdict.
 */
export async function checkProxy(
  input: DoctorInput,
  targets: readonly [string, URL][],
): Promise<CheckResult> {
  const { proxySettings, proxyFor } = await import('../../lib/http/http-agent.js')
  let settings: ReturnType<typeof proxySettings>
  try {
    settings = proxySettings(input.env)
  } catch (err) {
    return result('proxy', 'fail', describe(err), 'fix or unset the proxy variable')
  }
  if (settings.http === undefined && settings.https === undefined) {
    return result('proxy', 'ok', 'no HTTP(S)_PROXY set: direct connections')
  }
  const routes = targets.map(([what, url]) => {
    const proxy = proxyFor(url, settings)
    if (proxy === undefined)
      return `${what} ${url.host} direct${isLoopbackHost(url.hostname) ? ' (loopback)' : ''}`
    if (noProxyMatches(settings.noProxy, url)) return `${what} ${url.host} direct (NO_PROXY)`
    return `${what} ${url.host} via ${proxyHost(proxy)}`
  })
  const mqtt = input.config.mqtt ? '; MQTT connects directly' : ''
  return result(
    'proxy',
    'ok',
    `${routes.length > 0 ? routes.join('; ') : 'proxy set, nothing to reach through it'}${mqtt}`,
  )
}
