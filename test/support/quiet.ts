/**
 * Keeps oidc-provider's start-up notices ("unsupported runtime", "in-memory adapter",
 * "devInteractions", "default X function called") out of test output.
 *
 * oidc-provider writes them with `console.info` / `console.warn` and a fixed prefix; only lines
 * with that prefix are dropped, so test failures and everything else still print.
 */

// The prefix may be wrapped in an ANSI colour when stdout/stderr is a TTY.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching the ANSI escape is the point
const NOTICE = /^(?:\u001b\[[0-9;]*m)?oidc-provider (?:NOTICE|WARNING):/

let installed = false

/**
 * Installs the filter on `console.info` and `console.warn` once per process. Call it before
 * importing oidc-provider: the runtime warning is printed at import time.
 */
export function silenceOidcProviderNotices(): void {
  if (installed) return
  installed = true
  for (const method of ['info', 'warn'] as const) {
    const original = console[method].bind(console)
    console[method] = (...args: unknown[]) => {
      if (typeof args[0] === 'string' && NOTICE.test(args[0])) return
      original(...args)
    }
  }
}
