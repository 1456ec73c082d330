/**
 * Shared undici MockAgent set-up for tests of hostile or malformed responses: real network is
 * forbidden, and every interceptor must have been used by the end of the test.
 */
import type { TestContext } from 'node:test'
import { MockAgent } from 'undici'
import { setHttpDispatcher } from '../../src/oauth/http.js'

/** Options of {@link mockHttp}. */
export interface MockHttpOptions {
  /**
   * Fail the test when a request matches no interceptor. Without it such a request reaches the code
   * as a network error, which polling and retry loops absorb as a back-off: an unexpected extra
   * request would pass unnoticed.
   */
  failOnUnmatched?: boolean
}

/**
 * Routes the protocol core's HTTP through a fresh MockAgent for the duration of one test.
 *
 * @param t - the test context; cleanup is registered with `t.after`.
 * @param options - whether an unmatched request fails the test.
 * @returns the agent; use `agent.get(origin).intercept(...)`.
 */
export function mockHttp(t: TestContext, options: MockHttpOptions = {}): MockAgent {
  const agent = new MockAgent()
  agent.disableNetConnect()
  const unmatched: string[] = []
  if (options.failOnUnmatched) recordUnmatched(agent, unmatched)
  setHttpDispatcher(agent)
  t.after(async () => {
    setHttpDispatcher(undefined)
    try {
      agent.assertNoPendingInterceptors()
      if (unmatched.length > 0) throw new Error(`requests no interceptor expected: ${unmatched.join(', ')}`)
    } finally {
      await agent.close()
    }
  })
  return agent
}

/** Notes every request that matched no interceptor (undici reports it to the handler as an error). */
function recordUnmatched(agent: MockAgent, unmatched: string[]): void {
  const dispatch = agent.dispatch.bind(agent)
  agent.dispatch = (opts, handler) => {
    const note = (err: unknown) => {
      if ((err as { code?: unknown } | null)?.code === 'UND_MOCK_ERR_MOCK_NOT_MATCHED')
        unmatched.push(`${opts.method} ${String(opts.origin ?? '')}${opts.path}`)
    }
    const watched = new Proxy(handler, {
      get(target, prop) {
        const value: unknown = Reflect.get(target, prop, target)
        if (typeof value !== 'function') return value
        // Called on the handler itself, never on the proxy (its methods may use private fields).
        const method = value as (...a: unknown[]) => unknown
        if (prop !== 'onError' && prop !== 'onResponseError') return method.bind(target)
        return (...args: unknown[]) => {
          note(args.at(-1))
          return method.apply(target, args)
        }
      },
    })
    try {
      return dispatch(opts, watched)
    } catch (err) {
      note(err)
      throw err
    }
  }
}

/** JSON response headers. */
export const JSON_HEADERS = { 'content-type': 'application/json; charset=utf-8' }
