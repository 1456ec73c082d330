import assert from 'node:assert/strict'
import { PassThrough } from 'node:stream'
import { describe, test } from 'node:test'
import { createQrDisplay, qrTarget, renderQr } from '../../src/display/qr.js'
import type { DisplayFlow } from '../../src/display/types.js'

const base: DisplayFlow = {
  userCode: 'WDJB-MJHT',
  verificationUri: 'https://idp.example.com/device',
  expiresAt: Date.now() + 600_000,
}

const COMPLETE = 'https://idp.example.com/device?user_code=WDJB-MJHT'

/**
 * The small-mode QR code of {@link COMPLETE}, rendered once (qrcode-terminal 0.12) and committed:
 * the display's output is compared with this, not with the renderer it calls.
 */
const COMPLETE_QR = [
  '▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄',
  '█ ▄▄▄▄▄ █▄▀▀▀▄▀▀█   ▄▄█ ▄▄▄▄▄ █',
  '█ █   █ █   █▄  ▄▀▀ ▀▄█ █   █ █',
  '█ █▄▄▄█ █▄█▀▄▄▄ █ ▀▀ ▀█ █▄▄▄█ █',
  '█▄▄▄▄▄▄▄█▄█ ▀▄█▄▀▄▀ ▀ █▄▄▄▄▄▄▄█',
  '█ ▄  ▀█▄█▄█ ▄██▄█▀▄  ▀ ▀▀ ▄▄█ █',
  '█▀ ▄▄▄▀▄█▀   █▀██▄▄▄█  ▀  █▄▄▀█',
  '█ ▀█ ▄ ▄ ▀▄▄  ▄  ▀ █ ▀▀▀▀█▄ ▀▀█',
  '█▄██▄ █▄ ▀▀▄█▄▄ ███▄▄ ▀██▀█▄ ▄█',
  '█▄▀▄  █▄██ ▄█▀▄ ▀▄█ █ ▄█▀▄ ▀ ██',
  '█▄█ ▄█▀▄█▄▄ ▀▀█▄▄  ███ ██▄█ ███',
  '██▄▄▄▄█▄▄▀▄█ ▀▄ █▀  █ ▄▄▄   ▀▀█',
  '█ ▄▄▄▄▄ ███▀ █ ▀▀▄▄▀▄ █▄█  █▄██',
  '█ █   █ █▀ ▄▀ █ ▀▄ ██  ▄  ▀▄ ▀█',
  '█ █▄▄▄█ █ █ ▀▀▄▄▀▀▄█ ▀█▀ ▀▀▄▀▄█',
  '█▄▄▄▄▄▄▄█▄▄████████▄▄▄▄█▄▄██▄██',
].join('\n')

function capture() {
  const stream = new PassThrough()
  let out = ''
  stream.on('data', (c: Buffer) => {
    out += c.toString('utf8')
  })
  return { stream, text: () => out }
}

describe('QR display', () => {
  test('RFC 8628 §3.3.1: the complete URI when present, else the verification URI', () => {
    assert.equal(
      qrTarget({ ...base, verificationUriComplete: 'https://idp.example.com/device?user_code=WDJB-MJHT' }),
      'https://idp.example.com/device?user_code=WDJB-MJHT',
    )
    assert.equal(qrTarget(base), 'https://idp.example.com/device')
    assert.equal(
      qrTarget({ ...base, verificationUri: 'http://127.0.0.1:4000/device' }),
      'http://127.0.0.1:4000/device',
    )
  })

  test('never a non-https URI', () => {
    assert.equal(qrTarget({ ...base, verificationUri: 'http://evil.example.com/device' }), undefined)
    assert.equal(qrTarget({ ...base, verificationUriComplete: 'javascript:alert(1)' }), undefined)
  })

  test('RFC 8628 §3.3.1: draws the QR code of verification_uri_complete (fixed fixture, small mode)', async () => {
    const { stream, text } = capture()
    const display = createQrDisplay({ stream })
    await display.show({ ...base, verificationUriComplete: COMPLETE })
    assert.equal(text(), `${COMPLETE_QR}\n`)
  })

  test('renderQr gives the committed fixture for the fixed URL, and another code for another URL', async () => {
    assert.equal((await renderQr(COMPLETE)).replace(/\n*$/, ''), COMPLETE_QR)
    assert.notEqual((await renderQr(base.verificationUri)).replace(/\n*$/, ''), COMPLETE_QR)
  })

  test('an insecure URI is not drawn, with a warning', async () => {
    const { stream, text } = capture()
    const warnings: string[] = []
    const display = createQrDisplay({ stream, onWarning: (w) => warnings.push(w) })
    await display.show({ ...base, verificationUri: 'http://evil.example.com/device' })
    assert.equal(text(), '')
    assert.equal(warnings.length, 1)
  })
})
