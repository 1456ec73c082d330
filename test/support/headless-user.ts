/**
 * The user's side of a sign-in, driven over plain HTTP against the test IdP (no browser): the
 * device verification pages (RFC 8628 §3.3), oidc-provider's development login and consent
 * interactions, and the authorization code flow's front channel.
 *
 * Redirects are followed by hand and cookies kept per path, the way a browser would; every step
 * checks it got what it expects and throws an Error naming the step otherwise.
 */

/** Options of the headless user. */
export interface HeadlessUserOptions {
  /** The login name typed on the development login page; becomes the `sub`. Default `device-user`. */
  login?: string
}

interface StoredCookie {
  name: string
  value: string
  path: string
}

/** A minimal cookie jar: name + path keyed, sent when the request path is under the cookie path. */
class CookieJar {
  readonly #cookies = new Map<string, StoredCookie>()

  store(response: Response, requestUrl: URL): void {
    for (const header of response.headers.getSetCookie()) {
      const [pair = '', ...attributes] = header.split(';')
      const eq = pair.indexOf('=')
      if (eq <= 0) continue
      const name = pair.slice(0, eq).trim()
      const value = pair.slice(eq + 1).trim()
      let path = requestUrl.pathname.replace(/\/[^/]*$/, '') || '/'
      let expired = false
      for (const attribute of attributes) {
        const [key = '', val = ''] = attribute.split('=').map((s) => s.trim())
        const lower = key.toLowerCase()
        if (lower === 'path' && val.startsWith('/')) path = val
        if (lower === 'max-age' && Number(val) <= 0) expired = true
        if (lower === 'expires' && Date.parse(val) <= Date.now()) expired = true
      }
      const key = `${name};${path}`
      if (expired || value === '') this.#cookies.delete(key)
      else this.#cookies.set(key, { name, value, path })
    }
  }

  header(url: URL): string | undefined {
    const matching = [...this.#cookies.values()].filter(
      (c) => url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`),
    )
    // RFC 6265 §5.4: longer paths first.
    matching.sort((a, b) => b.path.length - a.path.length)
    return matching.length > 0 ? matching.map((c) => `${c.name}=${c.value}`).join('; ') : undefined
  }
}

interface Page {
  url: URL
  status: number
  body: string
}

/** A browser-like session: one cookie jar, manual redirects. */
class Browser {
  readonly #jar = new CookieJar()

  /**
   * Sends one request and follows redirects (GET after 301/302/303) until a page.
   * Stops at a redirect leaving `stopAt`'s origin (the client's redirect_uri), returning it.
   */
  async request(url: URL, form?: Record<string, string>, stopOutside?: string): Promise<Page> {
    let current = url
    let init: RequestInit = form
      ? { method: 'POST', body: new URLSearchParams(form), redirect: 'manual' }
      : { method: 'GET', redirect: 'manual' }
    for (let hop = 0; hop < 20; hop += 1) {
      const headers = new Headers(init.headers)
      const cookie = this.#jar.header(current)
      if (cookie) headers.set('cookie', cookie)
      const response = await fetch(current, { ...init, headers })
      this.#jar.store(response, current)
      const location = response.headers.get('location')
      if (response.status >= 300 && response.status < 400 && location) {
        await response.body?.cancel()
        const next = new URL(location, current)
        if (stopOutside !== undefined && next.origin !== stopOutside) {
          return { url: next, status: response.status, body: '' }
        }
        current = next
        init = { method: 'GET', redirect: 'manual' }
        continue
      }
      return { url: current, status: response.status, body: await response.text() }
    }
    throw new Error(`headless user: too many redirects from ${url.pathname}`)
  }
}

function hiddenField(page: Page, name: string, step: string): string {
  const match = new RegExp(`<input[^>]*name="${name}"[^>]*value="([^"]*)"`).exec(page.body)
  if (!match?.[1]) {
    throw new Error(
      `headless user: ${step}: no "${name}" field on ${page.url.pathname} (status ${page.status})`,
    )
  }
  return match[1]
}

function expectInteraction(page: Page, prompt: 'login' | 'consent', step: string): string {
  const uid = /^\/interaction\/([^/]+)$/.exec(page.url.pathname)?.[1]
  if (page.status !== 200 || !uid || !page.body.includes(`name="prompt" value="${prompt}"`)) {
    throw new Error(
      `headless user: ${step}: expected the ${prompt} page, got ${page.status} at ${page.url.pathname}`,
    )
  }
  return uid
}

/** Steps 1-3 of the device verification: open /device, enter the code, confirm or abort. */
async function openDeviceCode(browser: Browser, issuer: string, userCode: string): Promise<Page> {
  const device = new URL('/device', issuer)
  const input = await browser.request(device)
  const xsrf = hiddenField(input, 'xsrf', 'open /device')
  const confirm = await browser.request(device, { xsrf, user_code: userCode })
  if (!confirm.body.includes('op.deviceConfirmForm')) {
    throw new Error(`headless user: user code was not accepted (status ${confirm.status})`)
  }
  return confirm
}

/** Logs in on the development login page; returns the uid of the consent interaction that follows. */
async function login(browser: Browser, afterConfirm: Page, name: string): Promise<string> {
  const loginUid = expectInteraction(afterConfirm, 'login', 'after confirm')
  const consentPage = await browser.request(new URL(`/interaction/${loginUid}`, afterConfirm.url), {
    prompt: 'login',
    login: name,
    password: 'any',
  })
  return expectInteraction(consentPage, 'consent', 'after login')
}

/**
 * Approves a pending device authorization as the user would in a browser: open the verification
 * page, enter the user code, confirm, log in (any password), consent.
 *
 * @param issuer - the test IdP's issuer URL.
 * @param userCode - the user_code from the device authorization response (dashes and case do not matter).
 * @param options - the login name.
 * @returns when the IdP showed its success page; the device's next poll gets tokens.
 * @throws Error naming the step that did not produce what it should.
 */
export async function approveDevice(
  issuer: string,
  userCode: string,
  options: HeadlessUserOptions = {},
): Promise<void> {
  const browser = new Browser()
  const confirm = await openDeviceCode(browser, issuer, userCode)
  const xsrf = hiddenField(confirm, 'xsrf', 'confirm page')
  const afterConfirm = await browser.request(new URL('/device', issuer), {
    xsrf,
    user_code: userCode,
    confirm: 'yes',
  })
  const consentUid = await login(browser, afterConfirm, options.login ?? 'device-user')
  const done = await browser.request(new URL(`/interaction/${consentUid}`, issuer), { prompt: 'consent' })
  if (done.status !== 200 || !done.body.includes('Sign-in Success')) {
    throw new Error(
      `headless user: consent did not end in success (status ${done.status} at ${done.url.pathname})`,
    )
  }
}

/**
 * Denies a pending device authorization, either on the confirmation page ("Abort") or at the
 * consent step after logging in. Either way the device's next poll gets `access_denied`.
 *
 * @param issuer - the test IdP's issuer URL.
 * @param userCode - the user_code to deny.
 * @param at - where the user refuses.
 * @returns when the IdP has recorded the denial.
 * @throws Error naming the step that did not produce what it should.
 */
export async function denyDevice(issuer: string, userCode: string, at: 'confirm' | 'consent'): Promise<void> {
  const browser = new Browser()
  const confirm = await openDeviceCode(browser, issuer, userCode)
  const xsrf = hiddenField(confirm, 'xsrf', 'confirm page')
  if (at === 'confirm') {
    const aborted = await browser.request(new URL('/device', issuer), {
      xsrf,
      user_code: userCode,
      abort: 'yes',
    })
    if (!aborted.body.includes('interrupted')) {
      throw new Error(`headless user: abort at confirm was not acknowledged (status ${aborted.status})`)
    }
    return
  }
  const afterConfirm = await browser.request(new URL('/device', issuer), {
    xsrf,
    user_code: userCode,
    confirm: 'yes',
  })
  const consentUid = await login(browser, afterConfirm, 'device-user')
  const aborted = await browser.request(new URL(`/interaction/${consentUid}/abort`, issuer))
  if (aborted.status >= 500) {
    throw new Error(`headless user: abort at consent failed (status ${aborted.status})`)
  }
}

/**
 * The user's side of an authorization code flow: opens the authorization URL, logs in,
 * consents, and returns where the IdP redirects the browser (the client's redirect_uri with
 * `code` and `state`, or with `error`).
 *
 * @param authorizationUrl - the full authorization request URL the client built.
 * @param options - the login name.
 * @returns the redirect URL the browser would be sent to.
 * @throws Error when a step does not produce what it should or the IdP never redirects away.
 */
export async function authorizeInBrowserless(
  authorizationUrl: string,
  options: HeadlessUserOptions = {},
): Promise<URL> {
  const browser = new Browser()
  const start = new URL(authorizationUrl)
  const first = await browser.request(start, undefined, start.origin)
  if (first.url.origin !== start.origin) return first.url
  const consentUid = await login(browser, first, options.login ?? 'device-user')
  const done = await browser.request(
    new URL(`/interaction/${consentUid}`, start),
    { prompt: 'consent' },
    start.origin,
  )
  if (done.url.origin === start.origin) {
    throw new Error(
      `headless user: authorization did not redirect to the client (status ${done.status} at ${done.url.pathname})`,
    )
  }
  return done.url
}

/** What the client's loopback listener showed the browser. */
export interface LoopbackPage {
  /** Where the IdP redirected the browser (carries the code: a secret). */
  callbackUrl: URL
  status: number
  contentType: string | null
  body: string
}

/**
 * The whole user side of a browser sign-in against a loopback redirect (RFC 8252 §7.3): the
 * authorization interaction as {@link authorizeInBrowserless} does it, then the browser following
 * the IdP's redirect to the client's listener, as a browser would (a plain GET).
 *
 * @param authorizationUrl - the authorization request URL the client printed or opened.
 * @param options - the login name.
 * @returns the listener's answer.
 * @throws Error when the IdP never redirects to the client, or the listener cannot be reached.
 */
export async function signInThroughLoopback(
  authorizationUrl: string,
  options: HeadlessUserOptions = {},
): Promise<LoopbackPage> {
  const callbackUrl = await authorizeInBrowserless(authorizationUrl, options)
  const response = await fetch(callbackUrl, { redirect: 'manual' })
  return {
    callbackUrl,
    status: response.status,
    contentType: response.headers.get('content-type'),
    body: await response.text(),
  }
}

/** A `form_post` authorization response as the browser would POST it. */
export interface FormPostResponse {
  /** The form's `action`: the client's redirect URI. */
  action: string
  /** The hidden fields (`code`, `state`, `iss`, or `error`): the POST body. Carries the code. */
  fields: URLSearchParams
}

/**
 * The user's side of an authorization code flow with `response_mode=form_post` (OAuth 2.0 Form
 * Post Response Mode): log in, consent, then read the auto-submitting form the IdP answers with
 * instead of a redirect.
 *
 * @param authorizationUrl - the authorization request URL.
 * @param options - the login name.
 * @returns the form's target and fields.
 * @throws Error when a step does not produce what it should or no form is answered.
 */
export async function authorizeWithFormPost(
  authorizationUrl: string,
  options: HeadlessUserOptions = {},
): Promise<FormPostResponse> {
  const browser = new Browser()
  const start = new URL(authorizationUrl)
  const first = await browser.request(start, undefined, start.origin)
  const consentUid = await login(browser, first, options.login ?? 'device-user')
  const done = await browser.request(
    new URL(`/interaction/${consentUid}`, start),
    { prompt: 'consent' },
    start.origin,
  )
  const form = /<form[^>]*method="post"[^>]*action="([^"]+)"/i.exec(done.body)
  if (done.status !== 200 || !form?.[1]) {
    throw new Error(`headless user: no form_post form (status ${done.status} at ${done.url.pathname})`)
  }
  const fields = new URLSearchParams()
  for (const match of done.body.matchAll(/<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"/g)) {
    fields.append(match[1] ?? '', decodeEntities(match[2] ?? ''))
  }
  return { action: decodeEntities(form[1]), fields }
}

function decodeEntities(text: string): string {
  return text
    .replace(/&#x([0-9a-f]+);/gi, (_, hex: string) => String.fromCodePoint(Number.parseInt(hex, 16)))
    .replace(/&#(\d+);/g, (_, dec: string) => String.fromCodePoint(Number(dec)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&')
}
