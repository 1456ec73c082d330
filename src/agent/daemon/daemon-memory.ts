/**
 * Start-up memory of the daemon (issue 21): its RSS peaked at 96-114 MiB in the first seconds of
 * the soak load, against 82-88 MiB for the rest of the run, and the peak was not in the JS heap.
 *
 * What it was (heaptrack, `--trace-gc` and 25 ms RSS samples of `npm run bench -- soak`): right
 * after the first upload, V8 tiered undici's HTTP parser (llhttp, WebAssembly) up from its baseline
 * compiler (Liftoff) to the optimizing one (TurboFan) on a background thread. llhttp's parser is
 * one very large function, and optimizing it took 30-35 MiB of compiler zone memory for 300-400 ms,
 * freed all at once: no garbage collection, no JS heap growth, only RSS. `--no-wasm-tier-up` and
 * `--no-wasm-dynamic-tiering` keep the spike (TurboFan still compiles it, sooner or later);
 * `--liftoff-only` removes it. The daemon parses about one HTTP answer a second, a few hundred
 * bytes: the optimized parser saves nothing measurable there (a loop of undici requests to a local
 * server: same CPU per request within the noise, ~300 µs, parsing included).
 *
 * It is set from inside the process because `NODE_OPTIONS` (the unit's `Environment=`) accepts only
 * a few V8 flags, and this is not one of them; a V8 flag changed after start-up applies to what is
 * compiled afterwards, so it must run before undici compiles llhttp (its first request).
 *
 * @packageDocumentation
 */
import { setFlagsFromString } from 'node:v8'

/**
 * Keeps WebAssembly on V8's baseline compiler for the rest of the process, so that undici's HTTP
 * parser is never optimized by TurboFan (a 30-35 MiB transient outside the JS heap). Call it before
 * the first HTTP request; JavaScript is still optimized as usual. For the `run` daemon only: a
 * process that parses much HTTP would parse it more slowly.
 *
 * @see https://v8.dev/docs/wasm-compilation-pipeline (Liftoff, TurboFan and dynamic tier-up)
 */
export function keepWasmOnBaselineCompiler(): void {
  // Two flags because V8 reads them at different times: `--liftoff-only` set at run time holds on
  // Node 20 and 22 but no longer on 24 and 26, where dynamic tiering decides from the per-function
  // budget; a budget this large is never spent by a parser called about once a second (checked
  // with %IsTurboFanFunction on each line: test/agent/daemon/daemon-memory.test.ts).
  setFlagsFromString('--liftoff-only')
  setFlagsFromString('--wasm-tiering-budget=2147483647')
}
