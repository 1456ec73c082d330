/**
 * The browser's side of the example web app (issue 18) for its tests: sign in through the app and
 * the test IdP (the IdP's pages driven by `headless-user.ts`), carrying the app's cookies as a
 * browser would; and small helpers to run the app as a child process.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { authorizeWithFormPost } from '../support/headless-user.js'

/** The value of a cookie the response sets (assertions on its attributes included). */
function setCookie(response: Response, name: string): { value: string; attributes: string } {
  for (const header of response.headers.getSetCookie()) {
    const [pair = '', ...rest] = header.split(';')
    if (pair.startsWith(`${name}=`)) {
      return { value: pair.slice(name.length + 1), attributes: rest.map((a) => a.trim()).join('; ') }
    }
  }
  throw new Error(`no ${name} cookie set (status ${response.status})`)
}

/**
 * Signs a user in through the example web app: `GET /signin`, the IdP's login and consent, the
 * form_post back to `/auth/callback`.
 *
 * @param appUrl - the app's base URL.
 * @param login - the login name (becomes the `sub`).
 * @param callbackUrl - where to post the IdP's form (default: its action, which must be this app).
 * @returns the `cookie` header value a browser then sends (`sid=…`).
 */
export async function signIn(appUrl: string, login: string, callbackUrl?: string): Promise<string> {
  const start = await fetch(`${appUrl}/signin`, { redirect: 'manual' })
  assert.equal(start.status, 302, 'GET /signin redirects to the IdP')
  const signin = setCookie(start, 'signin')
  assert.match(signin.attributes, /HttpOnly/)
  const post = await authorizeWithFormPost(start.headers.get('location') ?? '', { login })
  assert.equal(post.action, `${appUrl}/auth/callback`, 'the IdP posts back to the app')
  const done = await fetch(callbackUrl ?? post.action, {
    method: 'POST',
    body: post.fields,
    headers: { cookie: `signin=${signin.value}` },
    redirect: 'manual',
  })
  assert.equal(done.status, 303, `the callback signs in (${await done.clone().text()})`)
  const sid = setCookie(done, 'sid')
  assert.match(sid.attributes, /HttpOnly/)
  assert.match(sid.attributes, /SameSite=Lax/)
  assert.match(sid.attributes, /Path=\//)
  return `sid=${sid.value}`
}

/** What `GET /telemetry` answered. */
export interface TelemetryAnswer {
  status: number
  body: Record<string, unknown>
  text: string
  retryAfter: string | null
}

/**
 * `GET /telemetry` as the signed-in browser.
 *
 * @param appUrl - the app's base URL.
 * @param cookie - from {@link signIn}.
 * @returns the status and the JSON body.
 */
export async function telemetry(appUrl: string, cookie: string): Promise<TelemetryAnswer> {
  const response = await fetch(`${appUrl}/telemetry`, { headers: { cookie } })
  const text = await response.text()
  return {
    status: response.status,
    body: JSON.parse(text) as Record<string, unknown>,
    text,
    retryAfter: response.headers.get('retry-after'),
  }
}

/** Every app process still running, killed if this test process exits first (a timed-out test). */
const running = new Set<ChildProcess>()
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

/** A web app child process. */
export interface AppProcess {
  url: string
  /** Its stderr so far (log lines). */
  readonly stderr: string
  stop(): Promise<void>
}

/**
 * Starts `test/examples/web-app/main.ts` through tsx with the given environment.
 *
 * @param env - ISSUER, CLIENT_ID, … (see main.ts).
 * @returns once it prints `listening`.
 */
export async function startAppProcess(env: Record<string, string>): Promise<AppProcess> {
  const main = new URL('./web-app/main.ts', import.meta.url).pathname
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', main], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  running.add(child)
  child.once('exit', () => running.delete(child))
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk
  })
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error(`web app did not start: ${stderr}`)), 20_000)
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk
      const match = /listening (\S+)\n/.exec(out)
      if (match?.[1]) {
        clearTimeout(timer)
        resolve(match[1])
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`web app exited with ${code}: ${stderr}`))
    })
  })
  return {
    url,
    get stderr() {
      return stderr
    },
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve()
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
        child.once('exit', () => {
          clearTimeout(timer)
          resolve()
        })
        child.kill('SIGTERM')
      }),
  }
}
