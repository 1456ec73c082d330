/**
 * Runs the edgetoken CLI as a child process, the way users and scripts do: a clean environment
 * (no `EDGETOKEN_*` of the developer's shell leaks in), an optional state directory, stdin text,
 * and stdout/stderr/exit code captured.
 *
 * By default the TypeScript sources run through tsx (no build needed). Set `EDGETOKEN_TEST_CLI=dist`
 * (or `entry: 'dist'`) to run the built `dist/cli.js` instead.
 *
 * The built CLI can run on another Node, through a command prefix, while the tests and their
 * servers stay on this one (test/arm64.sh: an arm64 Node under qemu-user, which has no binfmt
 * registration here, so the emulator must start the child itself):
 * - `EDGETOKEN_TEST_NODE`: the node binary that runs `dist/cli.js` (default: this process's node);
 * - `EDGETOKEN_TEST_CLI_PREFIX`: words put before it, split on spaces (e.g. `qemu-aarch64-static`);
 * - `EDGETOKEN_TEST_TIME_SCALE`: a factor (>= 1) for the CLI timeouts here, as an emulated Node is
 *   10-20 times slower.
 * They apply to the `dist` entry only: the `src` entry needs tsx's native esbuild.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The project root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const SRC_CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url))
const DIST_CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url))

/** Options of {@link runCli} and {@link spawnCli}. */
export interface RunCliOptions {
  /** Sets `EDGETOKEN_STATE_DIR`. */
  stateDir?: string
  /** Extra environment; `undefined` values remove a variable. */
  env?: Record<string, string | undefined>
  /** Text written to stdin (then closed). Default: stdin closed at once. */
  stdin?: string
  /** Kill (SIGKILL) and reject after this long, times `EDGETOKEN_TEST_TIME_SCALE`. Default 30 000 ms. */
  timeoutMs?: number
  /** `src` (tsx, default) or `dist` (the build). */
  entry?: 'src' | 'dist'
  /** Extra node flags before the script (e.g. `--import` of a hook). */
  nodeArgs?: string[]
  /** Working directory. Default: the project root. */
  cwd?: string
}

/** What a finished CLI run produced. */
export interface CliResult {
  /** Exit code, or null when killed by a signal. */
  code: number | null
  /** The signal that ended it, if any. */
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** Wall time, ms. */
  durationMs: number
}

/**
 * The environment a CLI child gets: the parent's minus every `EDGETOKEN_*`, `CREDENTIALS_DIRECTORY`,
 * `STATE_DIRECTORY` and proxy variable, plus the given ones.
 *
 * @param options - state dir and extra variables.
 * @returns the environment.
 */
export function cliEnv(options: RunCliOptions = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(EDGETOKEN_|CREDENTIALS_DIRECTORY$|STATE_DIRECTORY$|NOTIFY_SOCKET$)/.test(k)) continue
    if (/^(https?|all|no)_proxy$/i.test(k)) continue
    if (k === 'NODE_OPTIONS' || k === 'NODE_TEST_CONTEXT') continue
    env[k] = v
  }
  if (options.stateDir !== undefined) env.EDGETOKEN_STATE_DIR = options.stateDir
  for (const [k, v] of Object.entries(options.env ?? {})) {
    if (v === undefined) delete env[k]
    else env[k] = v
  }
  return env
}

/**
 * The factor for CLI timeouts: `EDGETOKEN_TEST_TIME_SCALE` when it is a number >= 1, else 1.
 *
 * @param env - where to read it. Default `process.env`.
 * @returns the factor.
 */
export function timeScale(env: NodeJS.ProcessEnv = process.env): number {
  const scale = Number(env.EDGETOKEN_TEST_TIME_SCALE)
  return Number.isFinite(scale) && scale >= 1 ? scale : 1
}

/**
 * Scales a timeout by {@link timeScale}, for tests whose waits cover the CLI's own work.
 *
 * @param ms - the timeout on a native Node.
 * @returns the timeout for the Node the CLI runs on.
 */
export function scaled(ms: number): number {
  return Math.round(ms * timeScale())
}

/**
 * The launcher of the built CLI: `EDGETOKEN_TEST_CLI_PREFIX`'s words, then `EDGETOKEN_TEST_NODE`
 * (or this process's node).
 *
 * @param env - where to read them. Default `process.env`.
 * @returns the prefix words and the node binary; node flags and the script follow.
 */
export function productNode(env: NodeJS.ProcessEnv = process.env): string[] {
  const prefix = (env.EDGETOKEN_TEST_CLI_PREFIX ?? '').split(' ').filter((w) => w.length > 0)
  const node = env.EDGETOKEN_TEST_NODE || process.execPath
  return [...prefix, node]
}

/** The launcher (prefix words and node) and the script (node flags and path) of an entry. */
function cliParts(entry?: 'src' | 'dist'): { launcher: string[]; script: string[] } {
  const which = entry ?? (process.env.EDGETOKEN_TEST_CLI === 'dist' ? 'dist' : 'src')
  if (which === 'src') return { launcher: [process.execPath], script: ['--import', 'tsx', SRC_CLI] }
  if (!existsSync(DIST_CLI)) throw new Error('dist/cli.js is missing: run npm run build')
  return { launcher: productNode(), script: [DIST_CLI] }
}

/**
 * The command that starts the CLI, for tests that spawn it with stdio of their own.
 *
 * @param entry - `src` (tsx) or `dist`; default from `EDGETOKEN_TEST_CLI`, else `src`. `dist`
 *   runs through `EDGETOKEN_TEST_CLI_PREFIX` and `EDGETOKEN_TEST_NODE` when they are set.
 * @returns the prefix, node's path, its flags and the script; append the command line.
 */
export function cliCommand(entry?: 'src' | 'dist'): string[] {
  const { launcher, script } = cliParts(entry)
  return [...launcher, ...script]
}

/**
 * Starts the CLI without waiting (for tests that signal or kill it). With a command prefix the
 * child is the emulator, which runs the guest in its own process: its pid and signals are the CLI's.
 *
 * @param args - the command line after `edgetoken`.
 * @param options - environment, state dir, entry point.
 * @returns the child process (stdout/stderr piped).
 */
export function spawnCli(args: readonly string[], options: RunCliOptions = {}): ChildProcess {
  const { launcher, script } = cliParts(options.entry)
  const [command, ...launcherArgs] = launcher
  return spawn(command as string, [...launcherArgs, ...(options.nodeArgs ?? []), ...script, ...args], {
    cwd: options.cwd ?? ROOT,
    env: cliEnv(options),
    stdio: ['pipe', 'pipe', 'pipe'],
  })
}

/**
 * Collects a spawned CLI's output until it exits.
 *
 * @param child - from {@link spawnCli}.
 * @param options - stdin text and timeout.
 * @returns the result.
 */
export function collect(child: ChildProcess, options: RunCliOptions = {}): Promise<CliResult> {
  const started = Date.now()
  const timeoutMs = scaled(options.timeoutMs ?? 30_000)
  return new Promise((resolve, reject) => {
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout?.on('data', (b: Buffer) => out.push(b))
    child.stderr?.on('data', (b: Buffer) => err.push(b))
    child.stdin?.on('error', () => {}) // the child may exit before reading stdin
    child.stdin?.end(options.stdin ?? '')
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`CLI did not exit within ${timeoutMs} ms; stderr: ${Buffer.concat(err).toString()}`))
    }, timeoutMs)
    child.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        durationMs: Date.now() - started,
      })
    })
  })
}

/**
 * Runs the CLI to completion.
 *
 * @param args - the command line after `edgetoken`.
 * @param options - environment, state dir, stdin, timeout, entry point.
 * @returns exit code, signal, stdout, stderr, duration.
 * @example
 * ```ts
 * const r = await runCli(['status', '--json'], { stateDir })
 * assert.equal(r.code, 0)
 * ```
 */
export function runCli(args: readonly string[], options: RunCliOptions = {}): Promise<CliResult> {
  return collect(spawnCli(args, options), options)
}

/** Options of {@link seedSignIn}. */
export interface SeedSignInOptions {
  /** The test IdP's issuer. */
  issuer: string
  /** The public client id. */
  clientId: string
  /** Scopes to request (include `offline_access` for a refresh token). */
  scopes: readonly string[]
  /** The state directory the CLI will use. */
  stateDir: string
  /** The environment the CLI will run with (key file, machine-id file). */
  env?: Record<string, string | undefined>
  /** The login name at the IdP. */
  login?: string
}

/**
 * Signs a device in for CLI tests without the `login` command: a real device flow against the test
 * IdP (approved by the headless user), saved with `saveSignIn` into the store the CLI will read.
 * Imports the protocol core lazily, so tests that only run the CLI do not load it.
 *
 * @param options - IdP, client, scopes, state dir and environment.
 * @returns the token set of the sign-in.
 */
export async function seedSignIn(
  options: SeedSignInOptions,
): Promise<import('../../src/oauth/types.js').TokenSet> {
  const [{ resolveAuthority }, device, tokens, { approveDevice }, { openTokenStore }, { saveSignIn }] =
    await Promise.all([
      import('../../src/oauth/authority.js'),
      import('../../src/oauth/grants/device.js'),
      import('../../src/oauth/tokens.js'),
      import('./headless-user.js'),
      import('../../src/store/token-store.js'),
      import('../../src/store/cache.js'),
    ])
  const server = await resolveAuthority(options.issuer)
  const client = { clientId: options.clientId }
  const flow = await device.startDeviceAuthorization(server, client, options.scopes)
  await approveDevice(options.issuer, flow.userCode, { login: options.login ?? 'device-user' })
  const requestedAt = Date.now()
  const tokenSet = await device.pollDeviceAuthorization(server, client, flow, { sleep: async () => {} })
  const store = await openTokenStore({ stateDir: options.stateDir, env: cliEnv({ env: options.env }) })
  await saveSignIn(store, {
    authority: options.issuer,
    clientId: options.clientId,
    account: tokens.accountFromTokenSet(server, options.clientId, tokenSet),
    tokenSet,
    requestedScopes: options.scopes,
    requestedAt,
  })
  return tokenSet
}

/** A signed-out device for CLI tests: its state directory and the environment that points at it. */
export interface TestDevice {
  readonly stateDir: string
  readonly env: Record<string, string> & {
    EDGETOKEN_STATE_DIR: string
    EDGETOKEN_KEY_FILE: string
    EDGETOKEN_MACHINE_ID_FILE: string
  }
}

/**
 * Makes a fresh device under `root`: a state directory (not created: the CLI creates it), a 0600
 * key file, a fixed machine-id file, a device id, and HOME/XDG_CONFIG_HOME of its own so the
 * developer's config files stay out.
 *
 * @param root - the test's temporary directory.
 * @param options - the IdP's issuer, client id (default `edgetoken-device`), scopes, extra variables.
 * @returns the device.
 */
export function newTestDevice(
  root: string,
  options: {
    issuer: string
    clientId?: string
    scopes?: readonly string[]
    extra?: Record<string, string>
  },
): TestDevice {
  const dir = mkdtempSync(join(root, 'device-'))
  const stateDir = join(dir, 'state')
  const keyFile = join(dir, 'key')
  const machineIdFile = join(dir, 'machine-id')
  writeFileSync(keyFile, Buffer.from('0123456789abcdef0123456789abcdef0123456789'), { mode: 0o600 })
  writeFileSync(machineIdFile, '5c4e3d2f1a0b49c8a7d6e5f4c3b2a190\n')
  return {
    stateDir,
    env: {
      EDGETOKEN_AUTHORITY: options.issuer,
      EDGETOKEN_CLIENT_ID: options.clientId ?? 'edgetoken-device',
      EDGETOKEN_SCOPES: (options.scopes ?? ['openid', 'offline_access', 'telemetry:write']).join(' '),
      EDGETOKEN_STATE_DIR: stateDir,
      EDGETOKEN_KEY_FILE: keyFile,
      EDGETOKEN_MACHINE_ID_FILE: machineIdFile,
      EDGETOKEN_DEVICE_ID: dir.slice(dir.lastIndexOf('device-')),
      HOME: join(dir, 'home'),
      XDG_CONFIG_HOME: join(dir, 'xdg'),
      ...options.extra,
    },
  }
}

/** Options of {@link seedCachedToken}. */
export interface SeedCachedTokenOptions {
  /** The access token's lifetime, ms. Default one hour. */
  lifetimeMs?: number
  /** How long ago it was obtained, ms. Default 0. */
  ageMs?: number
}

/**
 * Stores a signed-in account with an access token for the device's scopes, without an IdP (the
 * cached `token` path makes no request): for tests of what happens before any network.
 *
 * @param device - from {@link newTestDevice} (its authority names the account).
 * @param options - the token's lifetime and age.
 * @returns the access token and its expiry, epoch ms.
 */
export async function seedCachedToken(
  device: TestDevice,
  options: SeedCachedTokenOptions = {},
): Promise<{ token: string; expiresAt: number }> {
  const [{ openTokenStore }, { saveSignIn }] = await Promise.all([
    import('../../src/store/token-store.js'),
    import('../../src/store/cache.js'),
  ])
  const authority = device.env.EDGETOKEN_AUTHORITY
  const clientId = device.env.EDGETOKEN_CLIENT_ID
  if (authority === undefined || clientId === undefined)
    throw new Error('the device has no authority or client id')
  const requestedAt = Date.now() - (options.ageMs ?? 0)
  const expiresAt = requestedAt + (options.lifetimeMs ?? 3600_000)
  const token = `access-${randomBytes(12).toString('base64url')}`
  const store = await openTokenStore({ stateDir: device.stateDir, env: device.env })
  await saveSignIn(store, {
    authority,
    clientId,
    account: { id: 'user-1', issuer: authority },
    tokenSet: {
      accessToken: token,
      tokenType: 'bearer',
      expiresAt,
      scopes: ['telemetry:write'],
      refreshToken: 'r',
    },
    requestedScopes: (device.env.EDGETOKEN_SCOPES ?? '').split(' '),
    requestedAt,
  })
  return { token, expiresAt }
}

/**
 * Runs the CLI's `main()` in this process with captured output (no child, no build): for tests of
 * dispatch and of what the full CLI prints for a command line.
 *
 * @param argv - the command line after `edgetoken`.
 * @param env - the environment `main()` sees.
 * @returns the exit code and what was written to stdout and stderr.
 */
export async function runMain(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; out: string; err: string }> {
  const [{ main }, { PassThrough }] = await Promise.all([
    import('../../src/cli/main.js'),
    import('node:stream'),
  ])
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let out = ''
  let err = ''
  stdout.on('data', (d) => {
    out += d
  })
  stderr.on('data', (d) => {
    err += d
  })
  const code = await main({
    argv,
    env,
    stdin: new PassThrough(),
    stdout,
    stderr,
    signal: new AbortController().signal,
  })
  return { code, out, err }
}
