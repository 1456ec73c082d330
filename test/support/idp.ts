/**
 * A real OpenID Provider (oidc-provider 9) on 127.0.0.1 for tests: device flow, refresh-token
 * rotation, JWT access tokens for one protected API, private_key_jwt client credentials,
 * revocation and introspection.
 *
 * A middleware adds what oidc-provider does not do by itself, so clients can be tested against it:
 * an `interval` in the device authorization response, `slow_down` for early polls, an exact
 * device-code lifetime, and a record of every poll and every secret issued.
 *
 * @see https://www.rfc-editor.org/rfc/rfc8628 (device authorization grant)
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, jwtVerify, SignJWT } from 'jose'
import type { ProviderContext } from 'oidc-provider'
import { closeServer, listen, sha256Hex } from './net.js'
import { silenceOidcProviderNotices } from './quiet.js'

/** Options of {@link startTestIdp}. */
export interface TestIdpOptions {
  /** Lifetime of access tokens (device, refresh and client-credentials grants). Default 300. */
  accessTokenTtlSeconds?: number
  /** Lifetime of device codes, enforced to the millisecond. Default 600. */
  deviceCodeTtlSeconds?: number
  /** Lifetime of refresh tokens. Default 86400. */
  refreshTokenTtlSeconds?: number
  /** `interval` added to the /device/auth response; `null` sends none. Default 5. */
  interval?: number | null
  /**
   * Answer a poll that comes sooner than `interval` seconds after the previous poll of the same
   * device_code with `400 {"error":"slow_down"}` (RFC 8628 §3.5). Default false.
   */
  slowDown?: boolean
  /**
   * More clients, registered as given (oidc-provider client metadata), e.g. a
   * `client_secret_basic` client or a `private_key_jwt` client with an RSA key: for the
   * client-credentials tests (issue 12). Default none.
   */
  clients?: readonly Record<string, unknown>[]
  /**
   * Also register `edgetoken-desktop`: a native public client whose redirect URI is
   * `http://127.0.0.1/`, so any loopback port is accepted (RFC 8252 §7.3; oidc-provider ignores
   * the port of a native client's loopback redirect), for `login --browser` (issue 13). Default false.
   */
  loopbackClient?: boolean
  /**
   * Refresh-token rotation: `true` (default) rotates every refresh, reuse revoking the grant;
   * `'default'` is oidc-provider's own policy, which rotates a public client's refresh token only
   * when it is not sender-constrained (DPoP-bound ones are kept: issue 14).
   */
  rotateRefreshToken?: true | 'default'
  /**
   * DPoP (RFC 9449): oidc-provider 9 has it on (and advertises
   * `dpop_signing_alg_values_supported`); `false` turns it off, `'nonce'` also requires server
   * nonces in proofs (answering `use_dpop_nonce` with a `DPoP-Nonce`). Default true.
   */
  dpop?: boolean | 'nonce'
  /**
   * The RFC 8707 resource a client's requests default to, by client_id (issue 18: a web app that
   * calls the example web API gets tokens for `https://webapi.test`). Others default to the
   * telemetry API.
   */
  defaultResources?: Readonly<Record<string, string>>
  /**
   * Register RFC 8693 token exchange (issue 18). oidc-provider 9 has no such grant, so a handler
   * is added with its `registerGrantType`: it accepts an access token this IdP issued for the
   * exchanging client's own API (`https://webapi.test`) as `subject_token`, and issues a JWT
   * access token for the same `sub` to the requested `resource` (default the telemetry API), with
   * an RFC 8693 §4.1 `act` claim naming the client. Default false.
   */
  tokenExchange?: boolean
}

/** One device_code grant request seen at the token endpoint. */
export interface PollRecord {
  /** When the poll arrived (`Date.now()` milliseconds). */
  at: number
  /** SHA-256 hex of the device_code, so tests can group polls without holding the secret. */
  deviceCodeHash: string
  /** The HTTP status answered. */
  status: number
  /** The OAuth `error` answered, if any. */
  error?: string
}

/** Secrets the IdP has handed out, for "no secret leaked" assertions. */
export interface IssuedSecrets {
  deviceCodes: string[]
  userCodes: string[]
  accessTokens: string[]
  refreshTokens: string[]
  idTokens: string[]
}

/** A running test IdP; see {@link startTestIdp}. */
export interface TestIdp {
  /** `http://127.0.0.1:PORT`. */
  issuer: string
  /** The port it listens on. */
  port: number
  /**
   * `edgetoken-device`: a public client (no authentication) allowed the device_code,
   * refresh_token and authorization_code grants (redirect `http://127.0.0.1/cb`, PKCE required).
   */
  publicClientId: string
  /** `edgetoken-service`: authenticates with private_key_jwt (ES256), client_credentials grant. */
  confidentialClient: { clientId: string; privateJwk: JWK; publicJwk: JWK; alg: 'ES256' }
  /** The protected API's resource indicator and `aud`: `https://telemetry.test`. */
  audience: string
  /** A second resource the IdP also issues `telemetry:write` tokens for, to test audience checks. */
  otherAudience: string
  /** The scope of the protected API: `telemetry:write`. */
  apiScope: string
  /** The example web API's resource indicator and `aud` (issue 18): `https://webapi.test`. */
  webApiAudience: string
  /** The example web API's scope: `webapi:call`. */
  webApiScope: string
  /** How many RFC 8693 token exchange requests were answered 200. */
  tokenExchanges: number
  /** Every secret issued so far. */
  issued: IssuedSecrets
  /** Every device_code grant request at the token endpoint, in order. */
  polls: PollRecord[]
  /** How many refresh_token grant requests arrived. */
  refreshes: number
  /** How many authorization_code grant requests arrived at the token endpoint. */
  codeRedemptions: number
  /** How many device authorization requests (`/device/auth`) were answered 200. */
  deviceAuthorizations: number
  /** How many token requests carried a `DPoP` header, and how many were answered `use_dpop_nonce`. */
  dpop: { proofs: number; nonceChallenges: number }
  /** `edgetoken-desktop` (with `loopbackClient`), redirect `http://127.0.0.1/` on any port. */
  loopbackClientId: string
  /**
   * Revokes (or restores) a client's credential: its token requests are then answered
   * `401 {"error":"invalid_client"}` (RFC 6749 §5.2), as after a secret or certificate is removed.
   */
  revokeClient(clientId: string, revoked?: boolean): void
  /**
   * Holds every token endpoint request this long before it is processed (a slow IdP), e.g. to keep
   * a refresh in flight while other instances ask for the same user (issue 18). 0 (default) stops.
   */
  setTokenDelay(ms: number): void
  /** Changes the `interval` sent in later device authorization responses (and used by slow_down). */
  setInterval(seconds: number | null): void
  /** Turns slow_down answers on or off. */
  setSlowDown(on: boolean): void
  /**
   * Signs an access token with the IdP's own key, for claims a real grant cannot produce
   * (already expired, no scope). Defaults: this issuer, the API audience, `sub` `device-user`,
   * scope `telemetry:write`, issued now, expiring after the access token TTL; a claim set to
   * `undefined` is left out.
   */
  signAccessToken(claims?: JWTPayload): Promise<string>
  /** Stops the server. */
  close(): Promise<void>
}

const PUBLIC_CLIENT_ID = 'edgetoken-device'
const CONFIDENTIAL_CLIENT_ID = 'edgetoken-service'
const LOOPBACK_CLIENT_ID = 'edgetoken-desktop'
const AUDIENCE = 'https://telemetry.test'
const OTHER_AUDIENCE = 'https://other.test'
const API_SCOPE = 'telemetry:write'
const WEB_API_AUDIENCE = 'https://webapi.test'
const WEB_API_SCOPE = 'webapi:call'
const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange'
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'
const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code'
// RFC 8628 §3.5: a client that got no interval waits 5 seconds; slow_down uses the same default.
const DEFAULT_INTERVAL_SECONDS = 5

type ProviderModule = typeof import('oidc-provider')
let providerModule: Promise<ProviderModule> | undefined

function loadProvider(): Promise<ProviderModule> {
  // The runtime warning is printed while the module is evaluated, so silence first, then import.
  silenceOidcProviderNotices()
  providerModule ??= import('oidc-provider')
  return providerModule
}

interface DeviceCodeState {
  expiresAt: number
  lastPollAt: number | undefined
}

function record(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined
}

/**
 * Starts an oidc-provider IdP on a free 127.0.0.1 port.
 *
 * @param options - lifetimes, interval and slow_down behaviour.
 * @returns the running IdP; call `close()` when done.
 * @example
 * ```ts
 * const idp = await startTestIdp({ deviceCodeTtlSeconds: 3 })
 * t.after(() => idp.close())
 * ```
 */
export async function startTestIdp(options: TestIdpOptions = {}): Promise<TestIdp> {
  const accessTokenTtl = options.accessTokenTtlSeconds ?? 300
  const deviceCodeTtl = options.deviceCodeTtlSeconds ?? 600
  const refreshTokenTtl = options.refreshTokenTtlSeconds ?? 86400
  let interval = options.interval === undefined ? DEFAULT_INTERVAL_SECONDS : options.interval
  let slowDown = options.slowDown ?? false

  const [{ default: Provider, errors }, signing, client] = await Promise.all([
    loadProvider(),
    generateKeyPair('ES256', { extractable: true }),
    generateKeyPair('ES256', { extractable: true }),
  ])
  const signingKid = randomBytes(8).toString('hex')
  const signingJwk = {
    ...(await exportJWK(signing.privateKey)),
    kid: signingKid,
    alg: 'ES256',
    use: 'sig',
  }
  const clientKid = randomBytes(8).toString('hex')
  const privateJwk: JWK = { ...(await exportJWK(client.privateKey)), kid: clientKid, alg: 'ES256' }
  const publicJwk: JWK = { ...(await exportJWK(client.publicKey)), kid: clientKid, alg: 'ES256' }

  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined
  const server = createServer((req, res) => {
    if (handler) handler(req, res)
    else res.writeHead(503).end()
  })
  const port = await listen(server)
  const issuer = `http://127.0.0.1:${port}`

  const resourceServer = (audience: string) => ({
    audience,
    scope: audience === WEB_API_AUDIENCE ? WEB_API_SCOPE : API_SCOPE,
    accessTokenFormat: 'jwt',
    accessTokenTTL: accessTokenTtl,
    jwt: { sign: { alg: 'ES256' } },
  })

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: PUBLIC_CLIENT_ID,
        client_name: 'edgetoken test device',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: [DEVICE_CODE_GRANT, 'refresh_token', 'authorization_code'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/cb'],
      },
      {
        client_id: CONFIDENTIAL_CLIENT_ID,
        token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: 'ES256',
        jwks: { keys: [publicJwk] },
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
      ...(options.loopbackClient
        ? [
            {
              client_id: LOOPBACK_CLIENT_ID,
              client_name: 'edgetoken test desktop',
              application_type: 'native',
              token_endpoint_auth_method: 'none',
              grant_types: ['authorization_code', 'refresh_token'],
              response_types: ['code'],
              redirect_uris: ['http://127.0.0.1/'],
            },
          ]
        : []),
      ...(options.clients ?? []),
    ],
    jwks: { keys: [signingJwk] },
    cookies: { keys: [randomBytes(16).toString('hex')] },
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    scopes: ['openid', 'offline_access', 'profile'],
    claims: { openid: ['sub'], profile: ['name', 'preferred_username'] },
    // RFC 8693 §4.1: an exchanged token names the party acting for the subject.
    extraTokenClaims: (_ctx: unknown, token: { gty?: string; clientId?: string }) =>
      token.gty === 'token_exchange' ? { act: { sub: token.clientId } } : undefined,
    findAccount: (_ctx: unknown, sub: string) => ({
      accountId: sub,
      claims: () => ({ sub, name: sub, preferred_username: sub }),
    }),
    // 'default': leave oidc-provider's own rotateRefreshToken policy in place.
    ...(options.rotateRefreshToken === 'default' ? {} : { rotateRefreshToken: true }),
    ttl: {
      AccessToken: () => accessTokenTtl,
      ClientCredentials: () => accessTokenTtl,
      // One second more than advertised: oidc-provider rounds `iat` down to the second, which
      // would end the code up to a second early. The middleware enforces the exact lifetime.
      DeviceCode: () => deviceCodeTtl + 1,
      RefreshToken: () => refreshTokenTtl,
      Grant: () => refreshTokenTtl,
      IdToken: () => 3600,
      Interaction: () => 3600,
      Session: () => 86400,
      AuthorizationCode: () => 60,
    },
    features: {
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      devInteractions: { enabled: true },
      dPoP:
        options.dpop === false
          ? { enabled: false }
          : options.dpop === 'nonce'
            ? { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true }
            : { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (_ctx: unknown, client?: { clientId: string }) =>
          (client && options.defaultResources?.[client.clientId]) ?? AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx: unknown, resource: string) => {
          if (resource === AUDIENCE || resource === OTHER_AUDIENCE || resource === WEB_API_AUDIENCE)
            return resourceServer(resource)
          throw new errors.InvalidTarget()
        },
      },
    },
  })

  const issued: IssuedSecrets = {
    deviceCodes: [],
    userCodes: [],
    accessTokens: [],
    refreshTokens: [],
    idTokens: [],
  }
  const polls: PollRecord[] = []
  const revokedClients = new Set<string>()
  const deviceCodes = new Map<string, DeviceCodeState>()
  let refreshes = 0
  let codeRedemptions = 0
  let deviceAuthorizations = 0
  let tokenExchanges = 0
  let tokenDelayMs = 0
  const dpopCounts = { proofs: 0, nonceChallenges: 0 }

  const onDeviceAuthorization = (ctx: ProviderContext) => {
    const body = record(ctx.body)
    if (ctx.status !== 200 || !body || typeof body.device_code !== 'string') return
    deviceAuthorizations += 1
    issued.deviceCodes.push(body.device_code)
    if (typeof body.user_code === 'string') issued.userCodes.push(body.user_code)
    deviceCodes.set(sha256Hex(body.device_code), {
      expiresAt: Date.now() + deviceCodeTtl * 1000,
      lastPollAt: undefined,
    })
    body.expires_in = deviceCodeTtl
    if (interval !== null) body.interval = interval
  }

  const onDeviceCodePoll = (ctx: ProviderContext, deviceCode: unknown, at: number) => {
    const hash = typeof deviceCode === 'string' ? sha256Hex(deviceCode) : ''
    const state = deviceCodes.get(hash)
    if (state) {
      if (at >= state.expiresAt) {
        // RFC 8628 §3.5 expired_token, exactly at the advertised lifetime (see ttl.DeviceCode).
        ctx.status = 400
        ctx.body = { error: 'expired_token', error_description: 'device code is expired' }
      } else if (
        slowDown &&
        record(ctx.body)?.error === 'authorization_pending' &&
        state.lastPollAt !== undefined &&
        at - state.lastPollAt < (interval ?? DEFAULT_INTERVAL_SECONDS) * 1000
      ) {
        ctx.status = 400
        ctx.body = { error: 'slow_down', error_description: 'polling too frequently' }
      }
      state.lastPollAt = at
    }
    const error = record(ctx.body)?.error
    polls.push({
      at,
      deviceCodeHash: hash,
      status: ctx.status,
      ...(typeof error === 'string' ? { error } : {}),
    })
  }

  const onTokenResponse = (ctx: ProviderContext) => {
    const body = record(ctx.body)
    if (ctx.status !== 200 || !body) return
    if (typeof body.access_token === 'string') issued.accessTokens.push(body.access_token)
    if (typeof body.refresh_token === 'string') issued.refreshTokens.push(body.refresh_token)
    if (typeof body.id_token === 'string') issued.idTokens.push(body.id_token)
  }

  provider.use(async (ctx, next) => {
    const at = Date.now()
    if (tokenDelayMs > 0 && ctx.method === 'POST' && ctx.path === '/token') {
      await new Promise((resolve) => setTimeout(resolve, tokenDelayMs))
    }
    await next()
    if (ctx.method !== 'POST') return
    if (ctx.path === '/device/auth') {
      onDeviceAuthorization(ctx)
    } else if (ctx.path === '/token') {
      if (ctx.get('dpop')) dpopCounts.proofs += 1
      if (record(ctx.body)?.error === 'use_dpop_nonce') dpopCounts.nonceChallenges += 1
      const params = ctx.oidc?.params
      const clientId = ctx.oidc?.client?.clientId
      if (clientId !== undefined && revokedClients.has(clientId) && ctx.status === 200) {
        // What the token endpoint answers once the client's credential is gone (RFC 6749 §5.2).
        ctx.status = 401
        ctx.body = { error: 'invalid_client', error_description: 'client authentication failed' }
      }
      if (params?.grant_type === DEVICE_CODE_GRANT) onDeviceCodePoll(ctx, params.device_code, at)
      else if (params?.grant_type === 'refresh_token') refreshes += 1
      else if (params?.grant_type === 'authorization_code') codeRedemptions += 1
      else if (params?.grant_type === TOKEN_EXCHANGE_GRANT && ctx.status === 200) tokenExchanges += 1
      onTokenResponse(ctx)
    }
  })
  if (options.tokenExchange) {
    registerTokenExchange(provider as unknown as ExtensibleProvider, errors as unknown as OidcErrors, {
      issuer,
      publicKey: signing.publicKey,
      resourceServer,
    })
  }
  handler = provider.callback()

  return {
    issuer,
    port,
    publicClientId: PUBLIC_CLIENT_ID,
    confidentialClient: { clientId: CONFIDENTIAL_CLIENT_ID, privateJwk, publicJwk, alg: 'ES256' },
    audience: AUDIENCE,
    otherAudience: OTHER_AUDIENCE,
    apiScope: API_SCOPE,
    webApiAudience: WEB_API_AUDIENCE,
    webApiScope: WEB_API_SCOPE,
    get tokenExchanges() {
      return tokenExchanges
    },
    issued,
    polls,
    get refreshes() {
      return refreshes
    },
    get codeRedemptions() {
      return codeRedemptions
    },
    get deviceAuthorizations() {
      return deviceAuthorizations
    },
    dpop: dpopCounts,
    loopbackClientId: LOOPBACK_CLIENT_ID,
    setTokenDelay(ms: number) {
      tokenDelayMs = ms
    },
    setInterval(seconds: number | null) {
      interval = seconds
    },
    setSlowDown(on: boolean) {
      slowDown = on
    },
    revokeClient(clientId: string, revoked = true) {
      if (revoked) revokedClients.add(clientId)
      else revokedClients.delete(clientId)
    },
    signAccessToken(claims: JWTPayload = {}) {
      const now = Math.floor(Date.now() / 1000)
      return new SignJWT({
        iss: issuer,
        aud: AUDIENCE,
        sub: 'device-user',
        scope: API_SCOPE,
        client_id: PUBLIC_CLIENT_ID,
        jti: randomUUID(),
        iat: now,
        exp: now + accessTokenTtl,
        ...claims,
      })
        .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: signingKid })
        .sign(signing.privateKey)
    },
    close: () => closeServer(server),
  }
}

/** oidc-provider's error classes the token exchange throws (answered as RFC 6749 §5.2 errors). */
type OidcErrors = Record<
  'InvalidGrant' | 'InvalidRequest' | 'InvalidTarget',
  new (
    description?: string,
  ) => Error
>

/** The slice of oidc-provider's models and context a custom grant handler uses. */
interface ExtensibleProvider {
  AccessToken: new (
    fields: Record<string, unknown>,
  ) => {
    resourceServer?: unknown
    scope?: string
    readonly expiration: number
    save(): Promise<string>
  }
  ResourceServer: new (identifier: string, info: unknown) => unknown
  registerGrantType(
    name: string,
    handler: (ctx: {
      oidc: { params: Record<string, unknown>; client: { clientId: string } }
      body: unknown
    }) => Promise<void>,
    params: readonly string[],
    dupes?: readonly string[],
  ): void
}

/**
 * RFC 8693 §2 token exchange for the test IdP: the subject token must be an access token this IdP
 * signed for the example web API; the answer is an access token for the same user to the
 * requested resource.
 */
function registerTokenExchange(
  provider: ExtensibleProvider,
  errors: OidcErrors,
  keys: {
    issuer: string
    publicKey: Awaited<ReturnType<typeof generateKeyPair>>['publicKey']
    resourceServer: (audience: string) => { scope: string }
  },
): void {
  const handler: Parameters<ExtensibleProvider['registerGrantType']>[1] = async (ctx) => {
    const { params, client } = ctx.oidc
    if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('subject_token_type must be an access token (RFC 8693 §3)')
    }
    if (params.actor_token !== undefined) throw new errors.InvalidRequest('actor_token is not supported')
    if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('only access tokens are issued')
    }
    let subject: JWTPayload
    try {
      ;({ payload: subject } = await jwtVerify(String(params.subject_token), keys.publicKey, {
        issuer: keys.issuer,
        audience: WEB_API_AUDIENCE,
        algorithms: ['ES256'],
        typ: 'at+jwt',
        requiredClaims: ['sub', 'exp'],
      }))
    } catch {
      // RFC 8693 §2.2.2: an invalid subject token is invalid_request; oidc-provider's
      // invalid_grant reads the same to clients and is what the grant's own checks answer.
      throw new errors.InvalidGrant('subject_token is invalid or expired')
    }
    const resources = [params.resource ?? []].flat()
    if (resources.length > 1) throw new errors.InvalidTarget('only one resource per exchange')
    const resource = resources[0] === undefined ? AUDIENCE : String(resources[0])
    if (resource !== AUDIENCE && resource !== OTHER_AUDIENCE) throw new errors.InvalidTarget()
    const info = keys.resourceServer(resource)
    const asked = typeof params.scope === 'string' ? params.scope.split(' ') : info.scope.split(' ')
    const token = new provider.AccessToken({
      accountId: subject.sub,
      client,
      gty: 'token_exchange',
      scope: asked.filter((s) => info.scope.split(' ').includes(s)).join(' ') || undefined,
    })
    token.resourceServer = new provider.ResourceServer(resource, info)
    const value = await token.save()
    ctx.body = {
      access_token: value,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: token.expiration,
      ...(token.scope ? { scope: token.scope } : {}),
    }
  }
  provider.registerGrantType(
    TOKEN_EXCHANGE_GRANT,
    handler,
    [
      'subject_token',
      'subject_token_type',
      'actor_token',
      'actor_token_type',
      'requested_token_type',
      'audience',
      'scope',
      'resource',
    ],
    ['resource', 'audience'],
  )
}
