/**
 * A terminal QR code of the verification URI, so a phone can open it without typing.
 *
 * RFC 8628 §3.3.1: `verification_uri_complete` (which carries the user code) is meant for
 * non-textual transmission such as a QR code; without it, the plain `verification_uri`.
 * qrcode-terminal is imported only when a QR code is actually drawn.
 *
 * @packageDocumentation
 */
import { secureUrl } from '../lib/url.js'
import type { TextStream } from './console.js'
import type { DisplayFlow, LoginDisplay } from './types.js'

/** Options of {@link createQrDisplay}. */
export interface QrDisplayOptions {
  /** Where to draw: stdout, or stderr under `--json`. */
  stream: TextStream
  /** Receives a warning when the URI is not drawn. */
  onWarning?: (line: string) => void
}

/**
 * The URI a QR code should carry for a flow, when it is safe to show.
 *
 * @param flow - the pending flow.
 * @returns the complete URI when present, else the verification URI; undefined when it is not
 *   https (or http to loopback) — the protocol core validates this too, this is a cheap second check.
 * @see https://www.rfc-editor.org/rfc/rfc8628#section-3.3.1
 */
export function qrTarget(flow: DisplayFlow): string | undefined {
  const uri = flow.verificationUriComplete ?? flow.verificationUri
  return secureUrl(uri) ? uri : undefined
}

/**
 * Renders text as a small-mode terminal QR code (two rows per character line).
 *
 * @param text - what to encode.
 * @returns the QR code as lines of block characters.
 */
export async function renderQr(text: string): Promise<string> {
  // CommonJS: its module.exports is the ESM default export.
  const { default: qrcode } = await import('qrcode-terminal')
  return new Promise((resolve) => {
    qrcode.generate(text, { small: true }, (code: string) => resolve(code))
  })
}

/**
 * Creates the QR display.
 *
 * @param options - the stream.
 * @returns a {@link LoginDisplay}; `end` and `close` write nothing.
 */
export function createQrDisplay(options: QrDisplayOptions): LoginDisplay {
  return {
    name: 'qr',
    async show(flow) {
      const uri = qrTarget(flow)
      if (!uri) {
        options.onWarning?.('not drawing a QR code of a verification URI that is not https')
        return
      }
      const code = await renderQr(uri)
      options.stream.write(`${code.replace(/\n*$/, '')}\n`)
    },
    end() {},
    close() {},
  }
}
