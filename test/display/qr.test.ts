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

  test('draws exactly the QR code of the chosen URI (small mode)', async () => {
    const complete = 'https://idp.example.com/device?user_code=WDJB-MJHT'
    const { stream, text } = capture()
    const display = createQrDisplay({ stream })
    await display.show({ ...base, verificationUriComplete: complete })
    const expected = await renderQr(complete)
    assert.equal(text(), `${expected.replace(/\n*$/, '')}\n`)
    assert.notEqual(expected, await renderQr(base.verificationUri))
    // Small mode uses half blocks.
    assert.match(text(), /[▀▄█]/)
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
