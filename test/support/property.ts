/**
 * Shared set-up of the property-based tests (fast-check) over the parsers of untrusted input:
 * one fixed seed so every run tries the same inputs, a counter of the inputs tried per parser
 * (printed as a TAP diagnostic), the "a typed error or a valid value" outcome check, a spy on
 * `JSON.parse` for the size-cap properties, and arbitraries for hostile servers' bodies.
 *
 * Reproduce a failure with the seed and path fast-check prints; `EDGETOKEN_FC_SEED` overrides the
 * seed (to explore further), `EDGETOKEN_FC_RUNS` multiplies every parser's run count.
 */
import assert from 'node:assert/strict'
import type { TestContext } from 'node:test'
import fc from 'fast-check'
import { EdgeTokenError } from '../../src/errors.js'

/** The fixed seed of every property test (a date, so it is recognisable in output). */
export const SEED = Number(process.env.EDGETOKEN_FC_SEED ?? 20261125)
const RUN_FACTOR = Math.max(0.01, Number(process.env.EDGETOKEN_FC_RUNS ?? 1) || 1)

/** Options of {@link forAll}. */
export interface ForAllOptions {
  /** How many generated inputs to try (before {@link RUN_FACTOR}). */
  numRuns: number
  /** Fail a single run that takes longer than this, ms (async properties only). Default 10 000. */
  timeoutMs?: number
}

/**
 * Runs a property with the fixed seed and reports `<name>: inputs tried: N` as a TAP diagnostic,
 * with how often `check` returned each label (so the summary shows that valid inputs were
 * reached, not only refusals). N counts every call of `check`, shrinking included (so it equals
 * `numRuns` when all pass).
 *
 * @param t - the test context (for the diagnostic).
 * @param name - the parser's name, as it appears in the summary.
 * @param arb - the inputs.
 * @param check - throws (an assertion) when the property does not hold; may return (or resolve to)
 *   a string label, counted in the summary line (e.g. `accepted`, an error code).
 * @param options - run count and per-run timeout.
 * @returns the number of inputs tried.
 */
export async function forAll<T>(
  t: TestContext,
  name: string,
  arb: fc.Arbitrary<T>,
  check: (value: T) => unknown,
  options: ForAllOptions,
): Promise<number> {
  let tried = 0
  const tally = new Map<string, number>()
  const numRuns = Math.max(1, Math.round(options.numRuns * RUN_FACTOR))
  const started = Date.now()
  try {
    await fc.assert(
      fc.asyncProperty(arb, async (value) => {
        tried++
        const label = await check(value)
        if (typeof label === 'string') tally.set(label, (tally.get(label) ?? 0) + 1)
      }),
      { seed: SEED, numRuns, timeout: options.timeoutMs ?? 10_000 },
    )
  } catch (err) {
    // fast-check keeps the failing assertion as the cause; show it with the counterexample.
    const cause = (err as { cause?: unknown }).cause
    if (cause instanceof Error) throw new Error(`${(err as Error).message}\nCaused by: ${cause.stack}`)
    throw err
  } finally {
    const outcomes = [...tally].sort((a, b) => b[1] - a[1]).map(([label, n]) => `${label} ${n}`)
    const detail = outcomes.length > 0 ? `; ${outcomes.join(', ')}` : ''
    t.diagnostic(`${name}: inputs tried: ${tried} (seed ${SEED}, ${Date.now() - started} ms${detail})`)
  }
  return tried
}

/** What a parser did with one input. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; error: EdgeTokenError }

// biome-ignore lint/suspicious/noControlCharactersInRegex: a message must not carry control characters
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/

/**
 * Asserts that an error is a typed edgetoken error with a one-line, printable message (never a
 * TypeError, RangeError or SyntaxError escaping a parser).
 *
 * @param err - what was thrown.
 * @returns the error, typed.
 */
export function assertTypedError(err: unknown): EdgeTokenError {
  if (!(err instanceof EdgeTokenError)) {
    const what = err instanceof Error ? `${err.name}: ${err.message}\n${err.stack}` : String(err)
    assert.fail(`threw something other than an EdgeTokenError: ${what}`)
  }
  assert.equal(typeof err.code, 'string')
  assert.ok(
    !CONTROL.test(err.message),
    `the message is not one printable line: ${JSON.stringify(err.message)}`,
  )
  return err
}

/**
 * Calls a synchronous or asynchronous parser and returns its value or its typed error; anything
 * else thrown fails the property.
 *
 * @param fn - the parser call.
 * @returns the outcome.
 */
export async function outcome<T>(fn: () => T | Promise<T>): Promise<Outcome<Awaited<T>>> {
  try {
    return { ok: true, value: await fn() }
  } catch (err) {
    return { ok: false, error: assertTypedError(err) }
  }
}

/**
 * The summary label of an outcome: `accepted`, or the error's code.
 *
 * @param result - the outcome.
 * @returns the label.
 */
export function label(result: Outcome<unknown>): string {
  return result.ok ? 'accepted' : result.error.code
}

/** A spy on the global `JSON.parse`, see {@link spyJsonParse}. */
export interface JsonParseSpy {
  /** The length (UTF-16 units) of every text parsed since the spy was installed or reset. */
  readonly lengths: number[]
  /** Forgets the recorded calls. */
  reset(): void
  /** Puts the real `JSON.parse` back. */
  restore(): void
}

/**
 * Wraps `JSON.parse` to record the size of what is parsed, so a property can show that a body over
 * a cap was rejected before it was parsed.
 *
 * @returns the spy; restore it (e.g. in `t.after`).
 */
export function spyJsonParse(): JsonParseSpy {
  const real = JSON.parse
  const lengths: number[] = []
  JSON.parse = function parse(
    text: string,
    reviver?: (this: unknown, key: string, value: unknown) => unknown,
  ) {
    lengths.push(typeof text === 'string' ? text.length : String(text).length)
    return real(text, reviver)
  } as typeof JSON.parse
  return {
    lengths,
    reset() {
      lengths.length = 0
    },
    restore() {
      JSON.parse = real
    },
  }
}

/** Strings a hostile or broken server is likely to send where a value is expected. */
export const NASTY_STRINGS: readonly string[] = [
  '',
  ' ',
  '0',
  '-1',
  '1e309',
  '3600',
  ' 600 ',
  '5.5',
  'NaN',
  'null',
  'true',
  '{}',
  '[]',
  '\u0000',
  '\u001b[31mred',
  '\u202eevil',
  '\ufeff',
  'a\nb',
  'javascript:alert(1)',
  'data:text/html,x',
  'file:///etc/passwd',
  'http://evil.example/device',
  'https://idp.test/device',
  'https://user:pw@idp.test/device',
  'http://127.0.0.1:1/device',
  'http://[::1]/device',
  'https://xn--80ak6aa92e.com/',
  'https://idp.test/device#frag',
  'x'.repeat(5000),
  'AADSTS53003: blocked',
  'authorization_pending',
  'slow_down',
  'Bearer',
  'bearer',
  'DPoP',
]

/** Numbers at the edges of every range a parser checks. */
export const NASTY_NUMBERS: readonly number[] = [
  0,
  -0,
  -1,
  0.5,
  1,
  4.9,
  5,
  3600,
  3601,
  86400,
  86401,
  366 * 86400 + 1,
  2 ** 31,
  2 ** 53,
  1e21,
  Number.MAX_VALUE,
  -Number.MAX_VALUE,
  Number.MIN_VALUE,
]

/**
 * Any JSON value, weighted towards the values that sit on validation edges: nasty strings and
 * numbers, small objects and arrays, and arbitrary JSON.
 *
 * @param maxDepth - nesting of the arbitrary JSON part. Default 2.
 * @returns the arbitrary.
 */
export function edgyJsonValue(maxDepth = 2): fc.Arbitrary<unknown> {
  return fc.oneof(
    { arbitrary: fc.constantFrom(...NASTY_STRINGS), weight: 4 },
    { arbitrary: fc.constantFrom(...NASTY_NUMBERS), weight: 3 },
    { arbitrary: fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true })), weight: 2 },
    { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }), weight: 2 },
    { arbitrary: fc.constantFrom(null, true, false), weight: 1 },
    { arbitrary: fc.jsonValue({ maxDepth }), weight: 2 },
  )
}

/**
 * A valid object with a few of its fields broken: each object starts from one value per key
 * (from `valid`), then up to three fields are replaced (by an edgy JSON value or by one of
 * `nasty[key]`) or removed, and an unknown key may be added. Most inputs thus pass the early
 * checks and break exactly one later check; about a quarter stay valid, so the success path is
 * exercised too.
 *
 * @param valid - a valid value per key (`undefined` = leave the key out).
 * @param nasty - wrong values worth trying per key, besides the generic edgy ones.
 * @returns the arbitrary.
 */
export function mutatedObject(
  valid: Record<string, fc.Arbitrary<unknown>>,
  nasty: Record<string, fc.Arbitrary<unknown>> = {},
): fc.Arbitrary<Record<string, unknown>> {
  const keys = Object.keys(valid)
  const replacement = (key: string) => {
    const wrong = nasty[key]
    const values = wrong ? fc.oneof(edgyJsonValue(), wrong) : edgyJsonValue()
    return fc.oneof(
      { arbitrary: values.map((v) => ({ v })), weight: 3 },
      { arbitrary: fc.constant(undefined), weight: 1 },
    )
  }
  const mutation = fc.constantFrom(...keys).chain((key) => replacement(key).map((slot) => ({ key, slot })))
  return fc
    .tuple(
      fc.record(valid),
      fc.array(mutation, { maxLength: 3 }),
      fc.option(fc.dictionary(fc.string({ maxLength: 12 }), edgyJsonValue(1), { maxKeys: 2 }), { freq: 4 }),
    )
    .map(([base, mutations, extra]) => {
      const out: Record<string, unknown> = { ...(extra ?? {}) }
      for (const [key, value] of Object.entries(base)) if (value !== undefined) out[key] = value
      for (const { key, slot } of mutations) {
        if (slot === undefined) delete out[key]
        else out[key] = slot.v
      }
      return out
    })
}

/**
 * A response body: mostly the JSON text of `objects`, else arbitrary JSON, truncated JSON, an HTML
 * page, binary noise or invalid UTF-8 (decoded as a server's bytes would be).
 *
 * @param objects - the structured bodies.
 * @returns the body text.
 */
export function bodyText(objects: fc.Arbitrary<unknown>): fc.Arbitrary<string> {
  return fc.oneof(
    { arbitrary: objects.map((o) => JSON.stringify(o) ?? 'null'), weight: 10 },
    { arbitrary: fc.json({ maxDepth: 3 }), weight: 2 },
    {
      arbitrary: fc.tuple(objects, fc.nat()).map(([o, n]) => {
        const text = JSON.stringify(o) ?? ''
        return text.slice(0, n % (text.length + 1))
      }),
      weight: 1,
    },
    {
      arbitrary: fc.constantFrom('<!DOCTYPE html><html>portal</html>', '  <html>', '', ' ', 'null'),
      weight: 1,
    },
    { arbitrary: fc.string({ unit: 'binary', maxLength: 200 }), weight: 1 },
    { arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('utf8')), weight: 1 },
  )
}

/** Content types a server may send, right and wrong. */
export const CONTENT_TYPES: readonly (string | undefined)[] = [
  'application/json',
  'application/json; charset=utf-8',
  'APPLICATION/JSON',
  'application/problem+json',
  'text/html; charset=utf-8',
  'application/xhtml+xml',
  'text/plain',
  'application/jsonx',
  '',
  undefined,
]

/** Response headers: a content type (mostly JSON), sometimes a Retry-After of any shape. */
export function responseHeaders(): fc.Arbitrary<Record<string, string>> {
  return fc
    .tuple(
      fc.oneof(
        { arbitrary: fc.constant('application/json; charset=utf-8'), weight: 12 },
        { arbitrary: fc.constantFrom(...CONTENT_TYPES), weight: 3 },
        { arbitrary: fc.string({ maxLength: 30 }), weight: 1 },
      ),
      fc.option(
        fc.oneof(
          fc.nat().map(String),
          fc.constantFrom('-1', '1.5', 'Wed, 21 Oct 2015 07:28:00 GMT', 'soon', '99999999999999999999'),
          fc.string({ maxLength: 30 }),
        ),
        { freq: 4 },
      ),
    )
    .map(([type, retryAfter]) => {
      const headers: Record<string, string> = {}
      if (type !== undefined) headers['content-type'] = type
      if (retryAfter !== null) headers['retry-after'] = retryAfter
      return headers
    })
}

/** An HTTP status: mostly the ones OAuth clients branch on, sometimes any. */
export function httpStatus(success = 200): fc.Arbitrary<number> {
  return fc.oneof(
    { arbitrary: fc.constant(success), weight: 12 },
    { arbitrary: fc.constantFrom(400, 401, 403, 404, 408, 413, 429, 500, 502, 503), weight: 3 },
    { arbitrary: fc.integer({ min: 100, max: 599 }), weight: 1 },
  )
}
