/**
 * The undici dispatchers of edgetoken's HTTP: direct connections for loopback hosts (always, proxy
 * or not: tokens and device codes for a local IdP or API must not cross a proxy), and
 * `EnvHttpProxyAgent` for the rest when `HTTPS_PROXY`/`HTTP_PROXY` is set (`NO_PROXY` honoured).
 *
 * Through a proxy, every failure to open the tunnel fails the request at once with a
 * {@link ProxyTunnelError}: undici 7 would otherwise reconnect to a proxy that closes the socket
 * on `CONNECT` in a tight loop, for ever (nodejs/undici#3897; fixed only in undici 8.10.1).
 *
 * Imports undici: load it lazily (the cached `token` path and an idle daemon never do).
 *
 * @internal
 */
import { Agent, type buildConnector, Client, type Dispatcher, EnvHttpProxyAgent, Pool } from 'undici'
import { EdgeTokenError } from '../../errors.js'
import { isLoopbackHost } from '../url.js'
import { ProxyTunnelError } from './network-errors.js'

/** The proxies from the environment, read once. */
export interface ProxySettings {
  /** For `http:` targets (`http_proxy`, else `HTTP_PROXY`). */
  http: URL | undefined
  /** For `https:` targets (`https_proxy`, else `HTTPS_PROXY`, else the `http` one). */
  https: URL | undefined
  /** `no_proxy`, else `NO_PROXY` (undici matches it). */
  noProxy: string
}

function parseProxy(value: string | undefined, name: string): URL | undefined {
  if (!value) return undefined
  try {
    return new URL(value)
  } catch {
    // Never the value: it may hold the proxy's credentials.
    throw new EdgeTokenError('ERR_CONFIG', `${name} is not a URL (e.g. http://proxy.example:3128)`)
  }
}

/**
 * Reads the proxy variables the way undici's `EnvHttpProxyAgent` does (lower case first; an
 * https target falls back to the http proxy).
 *
 * @param env - the environment.
 * @returns the proxies.
 * @throws EdgeTokenError `ERR_CONFIG` when a proxy variable is not a URL.
 */
export function proxySettings(env: NodeJS.ProcessEnv): ProxySettings {
  const http = parseProxy(env.http_proxy ?? env.HTTP_PROXY, 'HTTP_PROXY')
  const https = parseProxy(env.https_proxy ?? env.HTTPS_PROXY, 'HTTPS_PROXY') ?? http
  return { http, https, noProxy: env.no_proxy ?? env.NO_PROXY ?? '' }
}

/**
 * The proxy a request to `url` is sent through, before `NO_PROXY`: none for loopback hosts
 * (127.0.0.0/8, ::1, localhost) and link-local hosts, whatever the environment says.
 *
 * @param url - the target.
 * @param settings - the proxies.
 * @returns the proxy's URL, or undefined for a direct connection.
 */
export function proxyFor(url: URL, settings: ProxySettings): URL | undefined {
  if (isLoopbackHost(url.hostname)) return undefined
  // Link-local (169.254.0.0/16, fe80::/10: the Azure instance metadata service) is on this link
  // only (RFC 3927 §2.6.2: never forwarded), so a proxy could never reach it (MSAL bypasses it too).
  if (/^169\.254(?:\.\d{1,3}){2}$/.test(url.hostname) || /^\[fe[89ab][0-9a-f]:/i.test(url.hostname))
    return undefined
  return url.protocol === 'https:' ? settings.https : settings.http
}

function defaultPort(url: URL): string {
  return url.port || (url.protocol === 'https:' ? '443' : '80')
}

/** undici's message for a non-200 answer to CONNECT: `Proxy response (403) !== 200 when HTTP Tunneling`. */
const PROXY_STATUS = /^Proxy response \((\d{3})\)/

/**
 * Wraps the tunnel connector of a proxied origin so that any failure is a {@link ProxyTunnelError}:
 * a code undici does not retry, so the queued request fails after one connection to the proxy.
 */
function guardTunnel(
  connect: buildConnector.connector,
  proxy: string,
  target: string,
): buildConnector.connector {
  return (options, callback) => {
    connect(options, (...args) => {
      const [err] = args
      if (err === null) {
        callback(...args)
        return
      }
      const status = PROXY_STATUS.exec(err.message)?.[1]
      callback(
        new ProxyTunnelError(proxy, target, status === undefined ? undefined : Number(status), err),
        null,
      )
    })
  }
}

/** Options of {@link createNetworkAgents}: undici's, passed to every pool. */
export type NetworkAgentOptions = Pick<
  Agent.Options,
  'headersTimeout' | 'bodyTimeout' | 'keepAliveTimeout' | 'connections' | 'connect'
>

/** The dispatchers of {@link createNetworkAgents}. */
export interface NetworkAgents {
  /**
   * The dispatcher for a URL: a direct agent for loopback hosts and when no proxy is set for the
   * URL's scheme, else the proxy agent (which connects directly to `NO_PROXY` hosts).
   *
   * @param url - the target.
   * @returns the dispatcher (created on first use).
   * @throws EdgeTokenError `ERR_CONFIG` when a proxy variable is not a URL.
   */
  forUrl(url: URL): Dispatcher
  /** Closes the dispatchers created so far, letting requests in flight finish. */
  close(): Promise<void>
  /** Destroys the dispatchers created so far, failing requests in flight. */
  destroy(): Promise<void>
}

/**
 * Creates the direct and proxy dispatchers, each on first use; the environment is read on the
 * first request that is not to a loopback host.
 *
 * @param options - undici pool options (timeouts, keep-alive, connections).
 * @param env - the environment with the proxy variables.
 * @returns the dispatchers.
 */
export function createNetworkAgents(
  options: NetworkAgentOptions = {},
  env: NodeJS.ProcessEnv = process.env,
): NetworkAgents {
  let settings: ProxySettings | undefined
  let direct: Agent | undefined
  let proxied: EnvHttpProxyAgent | undefined

  const factory = (origin: string | URL, opts: object): Dispatcher => {
    const poolOptions = opts as Pool.Options & { connections?: number | null }
    const connect = poolOptions.connect
    let guarded = poolOptions
    // A connector function here is the proxy agent's tunnel (CONNECT, then TLS to the target); the
    // direct agents pass none.
    if (typeof connect === 'function' && settings !== undefined) {
      const url = new URL(origin)
      const proxy = proxyFor(url, settings)
      const proxyHost = proxy === undefined ? 'proxy' : `${proxy.hostname}:${defaultPort(proxy)}`
      guarded = {
        ...poolOptions,
        connect: guardTunnel(connect, proxyHost, `${url.hostname}:${defaultPort(url)}`),
      }
    }
    return guarded.connections === 1 ? new Client(origin, guarded) : new Pool(origin, guarded)
  }

  return {
    forUrl(url) {
      if (isLoopbackHost(url.hostname)) {
        direct ??= new Agent(options)
        return direct
      }
      settings ??= proxySettings(env)
      if (proxyFor(url, settings) === undefined) {
        direct ??= new Agent(options)
        return direct
      }
      proxied ??= new EnvHttpProxyAgent({
        ...options,
        httpProxy: settings.http?.href ?? '',
        httpsProxy: settings.https?.href ?? '',
        noProxy: settings.noProxy,
        factory,
      })
      return proxied
    },
    async close() {
      await Promise.all([direct?.close(), proxied?.close()])
    },
    async destroy() {
      await Promise.all([direct?.destroy(), proxied?.destroy()])
    },
  }
}
