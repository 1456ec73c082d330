/**
 * Issue 21: the daemon's start-up RSS peak. V8 optimizing undici's WebAssembly HTTP parser
 * (TurboFan, after the first upload) took 30-35 MiB outside the JS heap for a moment; `run` keeps
 * WebAssembly on the baseline compiler (Liftoff) before anything loads undici.
 *
 * Observed in a child process started with --allow-natives-syntax: a small WebAssembly function
 * called a few million times is tiered up to TurboFan by default (the control, which shows the
 * probe can see a tier-up on this node), and stays on Liftoff once `run` has started.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../../..', import.meta.url))
const runCommand = fileURLToPath(new URL('../../../src/cli/commands/run.ts', import.meta.url))

/**
 * In a fresh process: optionally starts `edgetoken run` (with an argument, so it stops at once
 * with a usage error, after its start-up settings), then calls a WebAssembly function hot until
 * V8 optimized it or 4 million calls went by, yielding so a background compilation can finish.
 */
function probe(startRun: boolean): { liftoff: boolean; turbofan: boolean; usage: string } {
  const script = `
let usage = ''
if (${startRun}) {
  const { default: command } = await import(${JSON.stringify(runCommand)})
  await command.run({ args: ['unexpected'] }).catch((err) => { usage = err.code })
}
// (module (func (export "f") (param i32) (result i32) local.get 0 i32.const 1 i32.add))
const bytes = new Uint8Array([0,97,115,109,1,0,0,0,1,6,1,96,1,127,1,127,3,2,1,0,7,5,1,1,102,0,0,10,9,1,7,0,32,0,65,1,106,11])
const { f } = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports
const isTurbofan = new Function('f', 'return %IsTurboFanFunction(f)')
const isLiftoff = new Function('f', 'return %IsLiftoffFunction(f)')
let x = 0
for (let round = 0; round < 40 && !isTurbofan(f); round++) {
  for (let i = 0; i < 100_000; i++) x = f(x)
  await new Promise((r) => setTimeout(r, 5))
}
console.log(JSON.stringify({ liftoff: isLiftoff(f), turbofan: isTurbofan(f), usage }))
`
  const res = spawnSync(
    process.execPath,
    ['--allow-natives-syntax', '--import', 'tsx', '--input-type=module', '-e', script],
    { cwd: root, encoding: 'utf8', timeout: 60_000 },
  )
  assert.equal(res.status, 0, res.stderr)
  return JSON.parse(res.stdout.trim().split('\n').at(-1) ?? '')
}

describe('issue 21: the daemon start-up RSS peak', () => {
  test('issue 21: run keeps WebAssembly (undici’s llhttp) off TurboFan, whose compile was a 30-35 MiB RSS spike', () => {
    const control = probe(false)
    assert.equal(
      control.turbofan,
      true,
      'by default this node tiers a hot WebAssembly function up to TurboFan',
    )
    const daemon = probe(true)
    assert.equal(daemon.usage, 'ERR_USAGE')
    assert.deepEqual(
      { liftoff: daemon.liftoff, turbofan: daemon.turbofan },
      { liftoff: true, turbofan: false },
    )
  })
})
