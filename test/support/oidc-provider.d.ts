/**
 * The small part of oidc-provider's API the test IdP uses. oidc-provider ships no types and
 * `@types/oidc-provider` lags behind v9, so the test servers declare what they touch.
 */
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http'

  /** The slice of a Koa context the test middleware reads and rewrites. */
  export interface ProviderContext {
    path: string
    method: string
    status: number
    body: unknown
    oidc?: { params?: Record<string, unknown>; client?: { clientId: string } }
    set(field: string, value: string): void
    remove(field: string): void
    /** A request header (Koa `ctx.get`), '' when absent. */
    get(field: string): string
  }

  /** A Koa middleware mounted with `provider.use`. */
  export type ProviderMiddleware = (ctx: ProviderContext, next: () => Promise<void>) => Promise<void>

  /** oidc-provider's OAuth error classes (only the ones the test IdP throws). */
  export const errors: {
    InvalidTarget: new (description?: string) => Error
  }

  /** An OpenID Provider; `callback()` is a node:http request listener. */
  export default class Provider {
    constructor(issuer: string, configuration?: Record<string, unknown>)
    callback(): (req: IncomingMessage, res: ServerResponse) => void
    use(middleware: ProviderMiddleware): void
    on(event: string, listener: (...args: unknown[]) => void): this
  }
}
