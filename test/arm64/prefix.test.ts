/**
 * The test helpers' command prefix (test/support/cli.ts), which test/arm64.sh sets to run the
 * built CLI on an emulated arm64 Node: checked here with a recording wrapper in its place.
 */
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { cliCommand, productNode, ROOT, runCli, timeScale } from '../support/cli.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-prefix-'))
after(() => rmSync(root, { recursive: true, force: true }))

const VARIABLES = ['EDGETOKEN_TEST_CLI_PREFIX', 'EDGETOKEN_TEST_NODE', 'EDGETOKEN_TEST_TIME_SCALE'] as const

/** Runs `body` with the helper's variables set as given (the others removed), then restores them. */
async function withVariables(
  values: Partial<Record<(typeof VARIABLES)[number], string>>,
  body: () => Promise<void> | void,
): Promise<void> {
  const saved = VARIABLES.map((k) => [k, process.env[k]] as const)
  for (const k of VARIABLES) delete process.env[k]
  Object.assign(process.env, values)
  try {
    await body()
  } finally {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
}

describe('issue 19: the CLI command prefix of the test helpers', () => {
  test('issue 19: the dist entry starts through EDGETOKEN_TEST_CLI_PREFIX and EDGETOKEN_TEST_NODE, node flags after the node', async (t) => {
    if (!existsSync(join(ROOT, 'dist', 'cli.js'))) {
      t.skip('dist/cli.js is not built (npm run build)')
      return
    }
    const log = join(root, 'wrapper.log')
    const wrapper = join(root, 'wrapper.sh')
    // Records its arguments (the node, its flags, the script, the command line), then runs them.
    writeFileSync(wrapper, `#!/bin/sh\nprintf '%s\\n' "$@" > '${log}'\nexec "$@"\n`, { mode: 0o755 })
    const hook = join(root, 'hook.mjs')
    writeFileSync(hook, "process.stderr.write('hook ran\\n')\n")
    await withVariables(
      { EDGETOKEN_TEST_CLI_PREFIX: ` /bin/sh  ${wrapper} `, EDGETOKEN_TEST_NODE: process.execPath },
      async () => {
        assert.deepEqual(productNode(), ['/bin/sh', wrapper, process.execPath])
        assert.deepEqual(cliCommand('dist'), [
          '/bin/sh',
          wrapper,
          process.execPath,
          join(ROOT, 'dist', 'cli.js'),
        ])
        const r = await runCli(['--version'], { entry: 'dist', nodeArgs: ['--import', hook] })
        assert.equal(r.code, 0, r.stderr)
        assert.match(r.stdout, /^\d+\.\d+\.\d+/)
        assert.equal(r.stderr, 'hook ran\n')
        assert.deepEqual(readFileSync(log, 'utf8').trimEnd().split('\n'), [
          process.execPath,
          '--import',
          hook,
          join(ROOT, 'dist', 'cli.js'),
          '--version',
        ])
        // The sources need tsx (its native esbuild): they always run on this process's node.
        assert.deepEqual(cliCommand('src').slice(0, 3), [process.execPath, '--import', 'tsx'])
      },
    )
  })

  test('issue 19: without the variables the dist entry runs on this process node', async () => {
    await withVariables({}, () => {
      assert.deepEqual(productNode(), [process.execPath])
      assert.equal(timeScale(), 1)
    })
  })

  test('issue 19: EDGETOKEN_TEST_TIME_SCALE scales the CLI timeouts; below 1 or not a number it is 1', async () => {
    assert.equal(timeScale({ EDGETOKEN_TEST_TIME_SCALE: '15' }), 15)
    assert.equal(timeScale({ EDGETOKEN_TEST_TIME_SCALE: '2.5' }), 2.5)
    for (const v of ['0.5', '0', '-3', 'fast', '', undefined]) {
      assert.equal(timeScale({ EDGETOKEN_TEST_TIME_SCALE: v }), 1, String(v))
    }
    // runCli's timeout (30 s by default) is scaled: a 20 ms budget times 1000 lets a real run finish.
    await withVariables({ EDGETOKEN_TEST_TIME_SCALE: '1000' }, async () => {
      const r = await runCli(['--version'], { timeoutMs: 20 })
      assert.equal(r.code, 0, r.stderr)
    })
    await withVariables({}, async () => {
      await assert.rejects(runCli(['--version'], { timeoutMs: 20 }), /did not exit within 20 ms/)
    })
  })
})
