/**
 * Authorities: where the endpoints of an authorization server come from.
 *
 * - Any OpenID Provider: OIDC discovery at `<authority>/.well-known/openid-configuration`; the
 *   `issuer` it names must be the authority itself (OpenID Connect Discovery §4.3).
 * - Microsoft Entra ID (`https://login.microsoftonline.com/<tenant>` and the sovereign clouds): the
 *   v2.0 endpoints, discovery at `/<tenant>/v2.0/.well-known/openid-configuration`, and the
 *   `{tenantid}` issuer template of the multi-tenant authorities.
 *
 * Metadata is cached through an injected {@link MetadataCache} (the state directory, in the CLI).
 *
 * @packageDocumentation
 */
import { ConfigError, InvalidResponseError, UnavailableError } from '../errors.js'
import { secureUrl } from '../lib/url.js'
import { isNonEmptyString, isObject, isPrintable, type JsonObject } from '../lib/validate.js'
import type { SleepFunction } from './retry.js'
import type { MetadataCache } from './types.js'

/** The endpoints and identity of an authorization server, validated. Frozen. */
export interface AuthorizationServer {
  /** The issuer identifier; an id_token's `iss` must equal it (after the Entra template is filled in). */
  readonly issuer: string
  /** `entra` for Microsoft Entra ID authorities (client_info, issuer template), else `oidc`. */
  readonly dialect: 'oidc' | 'entra'
  /** RFC 6749 §3.2 token endpoint. */
  readonly tokenEndpoint: string
  /** RFC 8628 §3.1 device authorization endpoint, when the server offers the device grant. */
  readonly deviceAuthorizationEndpoint?: string | undefined
  /** RFC 6749 §3.1 authorization endpoint. */
  readonly authorizationEndpoint?: string | undefined
  /** The JWKS that signs id_tokens. */
  readonly jwksUri?: string | undefined
  /** RFC 7009 revocation endpoint. */
  readonly revocationEndpoint?: string | undefined
  /** RFC 7662 introspection endpoint. */
  readonly introspectionEndpoint?: string | undefined
  /** OpenID Connect RP-initiated logout endpoint. */
  readonly endSessionEndpoint?: string | undefined
  /** Entra ID: the tenant segment of the authority (`common`, a GUID, a domain). */
  readonly tenant?: string | undefined
  /**
   * RFC 9449 §5.1 `dpop_signing_alg_values_supported`: the server binds tokens to DPoP keys of
   * these algorithms. Absent when not advertised (a malformed list counts as absent).
   */
  readonly dpopSigningAlgValues?: readonly string[] | undefined
}

/** Options of {@link resolveAuthority}. */
export interface ResolveAuthorityOptions {
  /** Where discovery documents are cached; none = fetched every time. */
  cache?: MetadataCache | undefined
  /** How long a discovery document is cached, seconds. Default 86400 (24 h). */
  cacheTtlSeconds?: number | undefined
  /** Cancels the discovery request. */
  signal?: AbortSignal | undefined
  /** Per-request timeout, ms. Default 10000. */
  timeoutMs?: number | undefined
  /**
   * Waits between attempts while discovery is unavailable (network, 429/5xx; up to 3 attempts,
   * `Retry-After` honoured up to 30 s); inject for tests. Default: a timer.
   */
  sleep?: SleepFunction | undefined
}

/** The hosts of Entra ID's public and sovereign clouds. */
export const ENTRA_HOSTS: ReadonlySet<string> = new Set([
  'login.microsoftonline.com',
  'login.microsoft.com',
  'login.windows.net',
  'login.microsoftonline.us',
  'login.usgovcloudapi.net',
  'login.chinacloudapi.cn',
  'login.partner.microsoftonline.cn',
])

/** Entra ID tenants whose issuer is the `{tenantid}` template. */
const MULTI_TENANT = new Set(['common', 'organizations', 'consumers'])
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** A parsed authority, before discovery. */
export type ParsedAuthority =
  | { readonly kind: 'oidc'; readonly url: URL; readonly issuer: string }
  | { readonly kind: 'entra'; readonly url: URL; readonly host: string; readonly tenant: string }

/**
 * Parses and checks an authority URL: https, or http to a loopback host only; Entra ID hosts are
 * recognised.
 *
 * @param authority - the configured authority.
 * @returns the parsed authority.
 * @throws {@link ConfigError} `ERR_INSECURE_URL` for plain http to another host or another scheme;
 *   `ERR_CONFIG` for a malformed URL or an Entra ID URL without a tenant.
 */
export function parseAuthority(authority: string): ParsedAuthority {
  let url: URL
  try {
    url = new URL(authority)
  } catch {
    throw new ConfigError('authority is not a valid URL', { key: 'authority' })
  }
  if (!secureUrl(authority)) {
    throw new ConfigError('authority must be an https:// URL (http:// is allowed only for loopback hosts)', {
      key: 'authority',
      code: 'ERR_INSECURE_URL',
    })
  }
  if (url.search || url.hash || url.username || url.password) {
    throw new ConfigError('authority must not contain a query, fragment or credentials', { key: 'authority' })
  }
  const host = url.hostname.toLowerCase()
  if (ENTRA_HOSTS.has(host)) {
    const segments = url.pathname.split('/').filter((s) => s.length > 0)
    const tenant = segments[0]
    const rest = segments.slice(1)
    if (
      !tenant ||
      !/^[A-Za-z0-9.-]{1,128}$/.test(tenant) ||
      !(rest.length === 0 || rest.join('/') === 'v2.0')
    ) {
      throw new ConfigError(
        'an Entra ID authority must be https://<host>/<tenant> (tenant id, domain, common, organizations or consumers)',
        { key: 'authority' },
      )
    }
    return Object.freeze({ kind: 'entra', url, host, tenant: tenant.toLowerCase() })
  }
  // Normalise one trailing slash, so `https://idp/` and `https://idp` name the same issuer.
  const issuer = url.href.endsWith('/') ? url.href.slice(0, -1) : url.href
  return Object.freeze({ kind: 'oidc', url, issuer })
}

/**
 * Resolves an authority to its validated endpoints, through the metadata cache.
 *
 * @param authority - the authority URL (an issuer, or an Entra ID tenant URL).
 * @param options - cache, TTL, signal, timeout.
 * @returns the authorization server.
 * @throws {@link ConfigError} for an insecure or malformed authority;
 *   {@link InvalidResponseError} when the discovery document is not valid or names another issuer;
 *   `ERR_UNAVAILABLE` when it cannot be fetched.
 * @see https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfig
 * @see https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc
 */
export async function resolveAuthority(
  authority: string,
  options: ResolveAuthorityOptions = {},
): Promise<AuthorizationServer> {
  const parsed = parseAuthority(authority)
  const discoveryUrl =
    parsed.kind === 'oidc'
      ? `${parsed.issuer}/.well-known/openid-configuration`
      : `https://${parsed.host}/${parsed.tenant}/v2.0/.well-known/openid-configuration`
  const validate = (doc: unknown) =>
    parsed.kind === 'oidc' ? validateOidcMetadata(doc, parsed.issuer) : validateEntraMetadata(doc, parsed)

  const cacheKey = `openid-configuration ${discoveryUrl}`
  if (options.cache) {
    const cached = await options.cache.get(cacheKey).catch(() => undefined)
    if (cached !== undefined) {
      // The cache is a file: validate again, and refetch when it no longer passes.
      try {
        return validate(cached)
      } catch {
        // fall through to a fresh fetch
      }
    }
  }

  // Imported here so that parsing an authority (config checks) does not load undici.
  const [{ httpRequest, readJson, responseHeader }, { withRetries }, { parseRetryAfter }] = await Promise.all(
    [import('./http.js'), import('./retry.js'), import('../lib/http/retry-after.js')],
  )
  const { doc, server } = await withRetries(
    async () => {
      const response = await httpRequest(discoveryUrl, {
        signal: options.signal,
        timeoutMs: options.timeoutMs,
      })
      if (response.status !== 200) {
        if (response.status === 429 || response.status >= 500) {
          throw new UnavailableError(`discovery at ${response.url.host} answered ${response.status}`, {
            status: response.status,
            // RFC 9110 §10.2.3: kept, so the retry (and the caller after the last one) can honour it.
            retryAfterSeconds: parseRetryAfter(responseHeader(response, 'retry-after')),
          })
        }
        throw new InvalidResponseError(`discovery at ${response.url.host} answered ${response.status}`, {
          status: response.status,
          body: response.body,
        })
      }
      const doc = readJson(response, 'discovery document')
      return { doc, server: validate(doc) }
    },
    { sleep: options.sleep, signal: options.signal },
  )
  if (options.cache) {
    await options.cache.set(cacheKey, doc, options.cacheTtlSeconds ?? 86400).catch(() => undefined)
  }
  return server
}

function endpoint(doc: JsonObject, field: string, required: true): string
function endpoint(doc: JsonObject, field: string, required: false): string | undefined
function endpoint(doc: JsonObject, field: string, required: boolean): string | undefined {
  const value = doc[field]
  if (value === undefined && !required) return undefined
  if (!isNonEmptyString(value) || value.length > 2048 || !isPrintable(value)) {
    throw new InvalidResponseError(`discovery document: ${field} is missing or not a string`, { body: doc })
  }
  const url = secureUrl(value)
  if (!url || url.hash) {
    throw new InvalidResponseError(
      `discovery document: ${field} must be an https:// URL (http:// only for loopback hosts)`,
      { body: doc },
    )
  }
  return value
}

function endpoints(doc: JsonObject) {
  return {
    tokenEndpoint: endpoint(doc, 'token_endpoint', true),
    deviceAuthorizationEndpoint: endpoint(doc, 'device_authorization_endpoint', false),
    authorizationEndpoint: endpoint(doc, 'authorization_endpoint', false),
    jwksUri: endpoint(doc, 'jwks_uri', true),
    revocationEndpoint: endpoint(doc, 'revocation_endpoint', false),
    introspectionEndpoint: endpoint(doc, 'introspection_endpoint', false),
    endSessionEndpoint: endpoint(doc, 'end_session_endpoint', false),
    dpopSigningAlgValues: algorithmList(doc.dpop_signing_alg_values_supported),
  }
}

/** A list of JWS algorithm names, or undefined when absent or malformed (then DPoP is not used by `auto`). */
function algorithmList(value: unknown): readonly string[] | undefined {
  if (!Array.isArray(value) || value.length === 0 || value.length > 64) return undefined
  if (!value.every((alg) => typeof alg === 'string' && /^[A-Za-z0-9+_-]{1,32}$/.test(alg))) return undefined
  return Object.freeze([...(value as string[])])
}

/**
 * Validates an OIDC discovery document for an authority.
 *
 * @param doc - the parsed document (`unknown`).
 * @param expectedIssuer - the authority, without a trailing slash.
 * @returns the authorization server.
 * @throws {@link InvalidResponseError} when a field is missing or insecure, or the issuer differs.
 * @see https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfigurationValidation
 */
export function validateOidcMetadata(doc: unknown, expectedIssuer: string): AuthorizationServer {
  if (!isObject(doc)) throw new InvalidResponseError('discovery document is not a JSON object', { body: doc })
  const issuer = doc.issuer
  if (!isNonEmptyString(issuer)) {
    throw new InvalidResponseError('discovery document: issuer is missing', { body: doc })
  }
  const normalised = issuer.endsWith('/') ? issuer.slice(0, -1) : issuer
  if (normalised !== expectedIssuer) {
    // OpenID Connect Discovery §4.3: a mismatch means the document is not this authority's.
    throw new InvalidResponseError(
      `discovery document names issuer ${clip(issuer)}, not the configured authority ${expectedIssuer}`,
      { body: doc },
    )
  }
  return Object.freeze({ issuer, dialect: 'oidc', ...endpoints(doc) })
}

/**
 * Validates an Entra ID v2.0 discovery document. The issuer must be
 * `https://<entra host>/{tenantid}/v2.0` (multi-tenant authorities) or name a tenant GUID, the
 * authority's own when the authority names one. The device authorization endpoint defaults to
 * `/<tenant>/oauth2/v2.0/devicecode` next to the token endpoint.
 *
 * @param doc - the parsed document.
 * @param parsed - the parsed Entra authority.
 * @returns the authorization server.
 * @throws {@link InvalidResponseError} when a field is missing, insecure, or the issuer is foreign.
 * @see https://learn.microsoft.com/entra/identity-platform/access-tokens#validate-the-issuer
 */
export function validateEntraMetadata(
  doc: unknown,
  parsed: { readonly host: string; readonly tenant: string },
): AuthorizationServer {
  if (!isObject(doc)) throw new InvalidResponseError('discovery document is not a JSON object', { body: doc })
  const issuer = doc.issuer
  const match = isNonEmptyString(issuer) ? /^https:\/\/([^/]+)\/([^/]+)\/v2\.0$/.exec(issuer) : null
  const issuerHost = match?.[1]?.toLowerCase()
  const issuerTenant = match?.[2]
  const tenantOk =
    issuerTenant !== undefined &&
    (issuerTenant === '{tenantid}'
      ? MULTI_TENANT.has(parsed.tenant)
      : GUID.test(issuerTenant) &&
        (!GUID.test(parsed.tenant) || issuerTenant.toLowerCase() === parsed.tenant))
  if (!isNonEmptyString(issuer) || !issuerHost || !ENTRA_HOSTS.has(issuerHost) || !tenantOk) {
    throw new InvalidResponseError(
      `discovery document names issuer ${clip(String(issuer))}, not an Entra ID issuer for tenant ${parsed.tenant}`,
      { body: doc },
    )
  }
  const found = endpoints(doc)
  const deviceAuthorizationEndpoint =
    found.deviceAuthorizationEndpoint ?? found.tokenEndpoint.replace(/\/token$/, '/devicecode')
  return Object.freeze({
    issuer,
    dialect: 'entra',
    ...found,
    deviceAuthorizationEndpoint,
    tenant: parsed.tenant,
  })
}

function clip(value: string): string {
  return value.replace(/[^\x20-\x7e]/g, '').slice(0, 120)
}

/**
 * The issuer an id_token of this server must carry: the server's issuer, with Entra ID's
 * `{tenantid}` template filled in from the token's `tid` claim.
 *
 * @param server - the authorization server.
 * @param tid - the id_token's `tid` claim (unverified; the signature check that follows covers it).
 * @returns the expected `iss`, or undefined when the template cannot be filled (no valid `tid`).
 */
export function expectedIssuer(server: AuthorizationServer, tid: unknown): string | undefined {
  if (!server.issuer.includes('{tenantid}')) return server.issuer
  if (typeof tid !== 'string' || !GUID.test(tid)) return undefined
  return server.issuer.replace('{tenantid}', tid)
}
