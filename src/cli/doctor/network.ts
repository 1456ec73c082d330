/**
 * `doctor`'s HTTP checks: the identity provider (discovery and the endpoints the configured grant
 * needs) and the telemetry API. Each is one bounded attempt, never retried, through the same HTTP
 * client (proxy, loopback and TLS rules) the other commands use.
 *
 * What is sent, so that nothing secret goes anywhere it would not go anyway:
 * - the IdP: a GET of the discovery document, then an empty POST (no client id, no credential,
 *   no grant) to the token endpoint and, for `device_code`, to the device authorization endpoint:
 *   an OAuth error answer (400/401) proves the endpoint is there without starting a flow;
 * - a managed identity endpoint: a GET without the `Metadata: true` header, which it refuses
 *   (400/401) without issuing a token;
 * - the telemetry API: an empty POST without `Authorization`; the expected answer is 401.
 *
 * @internal
 */
import type { AuthorizationServer } from '../../oauth/authority.js'
import type { HttpResponse } from '../../oauth/http.js'
import { type CheckResult, type DoctorInput, describe, result } from './types.js'

/** What the IdP check learnt, besides its verdict. */
export interface HttpCheck {
  /** The verdict. */
  readonly result: CheckResult
  /** `Date` headers received (for the clock check). */
  readonly dates: readonly string[]
}

type Request = (url: URL, method: 'GET' | 'POST', headers?: Record<string, string>) => Promise<HttpResponse>

/** One request within the check's remaining budget. */
async function requester(
  input: DoctorInput,
  dates: string[],
  service: { name: string; setting: string },
): Promise<Request> {
  const { httpRequest, responseHeader } = await import('../../oauth/http.js')
  const deadline = Date.now() + input.timeoutMs
  return async (url, method, headers = {}) => {
    const response = await httpRequest(url, {
      method,
      headers,
      // An empty body, declared as a form so servers answer with their OAuth error.
      ...(method === 'POST'
        ? { body: '', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers } }
        : {}),
      timeoutMs: Math.max(1, deadline - Date.now()),
      signal: input.signal,
      service,
      maxBytes: 64 * 1024,
    })
    const date = responseHeader(response, 'date')
    if (date !== undefined) dates.push(date)
    return response
  }
}

function isHtml(response: HttpResponse): boolean {
  const type = response.headers['content-type']
  return /text\/html/i.test(Array.isArray(type) ? (type[0] ?? '') : (type ?? ''))
}

/** Judges an endpoint's answer to an empty POST: an OAuth error (4xx, not 404/405/410) is alive. */
function endpointProblem(name: string, response: HttpResponse): string | undefined {
  const { status } = response
  if (status >= 500 || status === 429)
    return `${name} ${response.url.host}${response.url.pathname} answered ${status}`
  if (isHtml(response))
    return `${name} ${response.url.host}${response.url.pathname} answered with an HTML page (${status}): a captive portal or a proxy's page`
  if (status === 404 || status === 405 || status === 410)
    return `${name} ${response.url.host}${response.url.pathname} answered ${status}`
  return undefined
}

async function discover(authority: string, request: Request): Promise<AuthorizationServer> {
  const { parseAuthority, validateEntraMetadata, validateOidcMetadata } = await import(
    '../../oauth/authority.js'
  )
  const { readJson } = await import('../../oauth/http.js')
  const { InvalidResponseError } = await import('../../errors.js')
  const parsed = parseAuthority(authority)
  const url =
    parsed.kind === 'oidc'
      ? `${parsed.issuer}/.well-known/openid-configuration`
      : `https://${parsed.host}/${parsed.tenant}/v2.0/.well-known/openid-configuration`
  const response = await request(new URL(url), 'GET')
  if (response.status !== 200) {
    throw new InvalidResponseError(`discovery at ${response.url.host} answered ${response.status}`)
  }
  const doc = readJson(response, 'discovery document')
  return parsed.kind === 'oidc'
    ? validateOidcMetadata(doc, parsed.issuer)
    : validateEntraMetadata(doc, parsed)
}

const IDP = { name: 'the identity provider', setting: 'authority' }

/**
 * The identity provider, for the configured grant: discovery (issuer, endpoints), then the
 * endpoints the grant uses; for `managed_identity`, the Azure Arc or instance metadata endpoint.
 *
 * @param input - config, environment, budget.
 * @returns the verdict and the `Date` headers seen.
 */
export async function checkIdp(input: DoctorInput): Promise<HttpCheck> {
  const dates: string[] = []
  const { config } = input
  try {
    if (config.grant === 'managed_identity') {
      return { result: await checkManagedIdentity(input, dates), dates }
    }
    if (config.authority === undefined) {
      return {
        result: result(
          'idp',
          'fail',
          'authority is not set',
          'edgetoken config set authority https://<issuer>',
        ),
        dates,
      }
    }
    if (config.clientId === undefined) {
      return {
        result: result('idp', 'fail', 'clientId is not set', 'edgetoken config set clientId <client id>'),
        dates,
      }
    }
    const request = await requester(input, dates, IDP)
    const server = await discover(config.authority, request)
    const needed: [string, string][] = [['token endpoint', server.tokenEndpoint]]
    if (config.grant === 'device_code') {
      if (server.deviceAuthorizationEndpoint === undefined) {
        return {
          result: result(
            'idp',
            'fail',
            `${server.issuer} offers no device_authorization_endpoint (RFC 8628 §4)`,
            'enable the device code grant at the IdP, or choose another grant: edgetoken config set grant client_credentials',
          ),
          dates,
        }
      }
      needed.push(['device authorization endpoint', server.deviceAuthorizationEndpoint])
    }
    const answers = await Promise.all(needed.map(([, url]) => request(new URL(url), 'POST')))
    for (const [i, response] of answers.entries()) {
      const problem = endpointProblem(needed[i]?.[0] ?? 'endpoint', response)
      if (problem !== undefined) {
        return {
          result: result(
            'idp',
            'fail',
            problem,
            'check the IdP (its status page) and that authority is the right issuer',
          ),
          dates,
        }
      }
    }
    return {
      result: result(
        'idp',
        'ok',
        `${server.issuer}: discovery, ${needed.map(([n]) => n).join(' and ')} answer (grant ${config.grant})`,
      ),
      dates,
    }
  } catch (err) {
    return { result: result('idp', 'fail', describe(err), idpFix(err)), dates }
  }
}

function idpFix(err: unknown): string {
  const code = (err as { code?: unknown }).code
  if (code === 'ERR_INSECURE_URL' || code === 'ERR_CONFIG')
    return 'edgetoken config set authority https://<issuer>'
  if (code === 'ERR_INVALID_RESPONSE')
    return 'check that authority is the issuer URL itself (its /.well-known/openid-configuration must name it)'
  return 'check that the IdP is up and reachable from here: network, DNS, firewall, HTTPS_PROXY/NO_PROXY'
}

async function checkManagedIdentity(input: DoctorInput, dates: string[]): Promise<CheckResult> {
  const [{ isArcEnvironment, arcEndpoint }, { imdsTokenUrl }] = await Promise.all([
    import('../../identity/managed-identity-arc.js'),
    import('../../identity/managed-identity-imds.js'),
  ])
  const arc = isArcEnvironment(input.env)
  const url = arc ? arcEndpoint(input.env) : imdsTokenUrl(input.env)
  const what = arc ? 'the Azure Arc identity endpoint' : 'the Azure instance metadata service'
  const request = await requester(input, dates, {
    name: what,
    setting: arc ? 'IDENTITY_ENDPOINT' : 'managedIdentity',
  })
  // No `Metadata: true`: both refuse the request (400/401) and issue no token.
  const response = await request(url, 'GET')
  if (response.status >= 500) {
    return result(
      'idp',
      'fail',
      `${what} at ${url.host} answered ${response.status}`,
      arc ? 'check the Arc agent: azcmagent show' : 'retry later; check the VM has a managed identity',
    )
  }
  return result('idp', 'ok', `${what} at ${url.host} answers (grant managed_identity)`)
}

const TELEMETRY = { name: 'the telemetry API', setting: 'telemetry.endpoint' }

/**
 * The telemetry API: an empty POST without a token must be refused with 401 (RFC 6750 §3.1), which
 * proves the route exists, takes POST and wants a bearer token.
 *
 * @param input - config, budget.
 * @returns the verdict and the `Date` headers seen (a warning when no endpoint is configured).
 */
export async function checkTelemetry(input: DoctorInput): Promise<HttpCheck> {
  const dates: string[] = []
  const endpoint = input.config.telemetry?.endpoint
  if (endpoint === undefined) {
    return {
      result: result(
        'telemetry',
        'warn',
        'telemetry.endpoint is not set: upload and run keep records in the spool',
        'edgetoken config set telemetry.endpoint https://<api>/ingest',
      ),
      dates,
    }
  }
  const url = new URL(endpoint)
  const fixUrl = 'check the URL: edgetoken config set telemetry.endpoint https://<api>/ingest'
  try {
    const request = await requester(input, dates, TELEMETRY)
    const response = await request(url, 'POST', { 'content-type': 'application/json' })
    const { status } = response
    const where = `${url.host}${url.pathname}`
    if (status === 401)
      return {
        result: result('telemetry', 'ok', `${where} answers and asks for a bearer token (401)`),
        dates,
      }
    if (isHtml(response)) {
      return {
        result: result(
          'telemetry',
          'fail',
          `${where} answered with an HTML page (${status}): a captive portal or a proxy's page`,
          'sign the network in (captive portal) or check HTTPS_PROXY/NO_PROXY',
        ),
        dates,
      }
    }
    if (status === 404 || status === 405 || status === 410 || status === 415) {
      return {
        result: result('telemetry', 'fail', `${where} answered ${status}: no ingest route there`, fixUrl),
        dates,
      }
    }
    if (status === 429 || status >= 500) {
      return {
        result: result(
          'telemetry',
          'fail',
          `${where} answered ${status}`,
          'the API is unavailable: retry later (uploads keep the spool meanwhile)',
        ),
        dates,
      }
    }
    if (status >= 200 && status < 300) {
      return {
        result: result(
          'telemetry',
          'warn',
          `${where} accepted a request without a token (${status})`,
          'check that this is the protected ingest route',
        ),
        dates,
      }
    }
    return {
      result: result(
        'telemetry',
        'warn',
        `${where} answered ${status} to a request without a token (expected 401)`,
        fixUrl,
      ),
      dates,
    }
  } catch (err) {
    return {
      result: result(
        'telemetry',
        'fail',
        describe(err),
        'check that the API is up and reachable from here: network, DNS, firewall, HTTPS_PROXY/NO_PROXY',
      ),
      dates,
    }
  }
}
