/**
 * Shared undici MockAgent set-up for tests of hostile or malformed responses: real network is
 * forbidden, and every interceptor must have been used by the end of the test.
 */
import type { TestContext } from 'node:test'
import { MockAgent } from 'undici'
import { setHttpDispatcher } from '../../src/oauth/http.js'

/**
 * Routes the protocol core's HTTP through a fresh MockAgent for the duration of one test.
 *
 * @param t - the test context; cleanup is registered with `t.after`.
 * @returns the agent; use `agent.get(origin).intercept(...)`.
 */
export function mockHttp(t: TestContext): MockAgent {
  const agent = new MockAgent()
  agent.disableNetConnect()
  setHttpDispatcher(agent)
  t.after(async () => {
    setHttpDispatcher(undefined)
    try {
      agent.assertNoPendingInterceptors()
    } finally {
      await agent.close()
    }
  })
  return agent
}

/** JSON response headers. */
export const JSON_HEADERS = { 'content-type': 'application/json; charset=utf-8' }
