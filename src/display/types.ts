/**
 * One interface for every place a device code is shown (terminal text, terminal QR code, MQTT
 * companion display), and a fan-out that shows it on several at once.
 *
 * A {@link DisplayFlow} carries only what a user may see: the device_code is not part of it, so no
 * display can leak it (whoever holds it with the client id can redeem the grant).
 *
 * @packageDocumentation
 */

/**
 * What a display shows while a device authorization is pending.
 *
 * @see https://www.rfc-editor.org/rfc/rfc8628#section-3.3
 */
export interface DisplayFlow {
  /** The code the user enters (RFC 8628 §3.2 `user_code`). */
  readonly userCode: string
  /** Where the user enters it (`verification_uri`). */
  readonly verificationUri: string
  /** The URI with the code embedded, for non-textual transmission such as a QR code (`verification_uri_complete`). */
  readonly verificationUriComplete?: string | undefined
  /** When the code expires, epoch milliseconds. */
  readonly expiresAt: number
  /** The IdP's own instructions (Entra ID sends one), when sent. */
  readonly message?: string | undefined
}

/**
 * How a sign-in ended. `failed`: anything but a denial, an expiry or a cancellation, e.g. the
 * user approved but the tokens could not be saved (say why in {@link DisplayEndDetail.reason}).
 */
export type DisplayEndState = 'approved' | 'denied' | 'expired' | 'cancelled' | 'failed'

/** Extra information for the end state. */
export interface DisplayEndDetail {
  /** The signed-in account's name, when approved. */
  readonly username?: string | undefined
  /** A one-line reason, for failures. */
  readonly reason?: string | undefined
}

/** A place the device code is shown. */
export interface LoginDisplay {
  /** A short name for warnings (`console`, `qr`, `mqtt`). */
  readonly name: string
  /** Shows the pending flow. Must not block the sign-in for long (the relay connects in the background). */
  show(flow: DisplayFlow): Promise<void> | void
  /**
   * Called once every display has shown the flow, as the sign-in starts waiting for approval.
   * A display that keeps a live line on a shared terminal (the console's countdown) starts it
   * here, so no other display's output lands inside that line.
   */
  waiting?(): Promise<void> | void
  /** Shows how the sign-in ended and removes the pending code. */
  end(state: DisplayEndState, detail?: DisplayEndDetail): Promise<void> | void
  /** Releases what the display holds (timers, connections). Idempotent. */
  close(): Promise<void> | void
}

/**
 * Copies exactly the displayable fields of a device authorization, so no other property (such as
 * a device_code, however it is stored) can reach a display.
 *
 * @param flow - a device authorization (or anything with these fields).
 * @returns a frozen {@link DisplayFlow}.
 */
export function toDisplayFlow(flow: DisplayFlow): DisplayFlow {
  const out: {
    userCode: string
    verificationUri: string
    verificationUriComplete?: string
    expiresAt: number
    message?: string
  } = { userCode: flow.userCode, verificationUri: flow.verificationUri, expiresAt: flow.expiresAt }
  if (flow.verificationUriComplete !== undefined) out.verificationUriComplete = flow.verificationUriComplete
  if (flow.message !== undefined) out.message = flow.message
  return Object.freeze(out)
}

export { isoSeconds } from '../lib/time.js'

/**
 * Shows a flow on several displays at once. One failing display does not stop the others or the
 * sign-in: its failure becomes one warning and it is left out of later calls. `show` resolves
 * after every display has shown the flow and then been told it is {@link LoginDisplay.waiting}.
 *
 * @param displays - the displays, in order.
 * @param onWarning - receives one line per failure.
 * @returns a display that forwards to all of them.
 */
export function fanOut(displays: readonly LoginDisplay[], onWarning: (line: string) => void): LoginDisplay {
  const failed = new Set<LoginDisplay>()
  const each = async (what: string, call: (d: LoginDisplay) => Promise<void> | void, all = false) => {
    await Promise.all(
      displays.map(async (d) => {
        if (failed.has(d) && !all) return
        try {
          await call(d)
        } catch (err) {
          if (!failed.has(d)) onWarning(`${d.name} display failed to ${what}: ${oneLine(err)}`)
          failed.add(d)
        }
      }),
    )
  }
  let closed = false
  return {
    name: displays.map((d) => d.name).join(','),
    show: async (flow) => {
      await each('show the code', (d) => d.show(flow))
      // Only now: the console's countdown line would otherwise be the line the QR code starts on.
      await each('show the code', (d) => d.waiting?.())
    },
    end: (state, detail) => each('show the end state', (d) => d.end(state, detail)),
    close: async () => {
      if (closed) return
      closed = true
      // Every display is closed, failed or not: they may still hold timers or sockets.
      await each('close', (d) => d.close(), true)
    },
  }
}

function oneLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err)
  return text.replace(/\s+/g, ' ').slice(0, 200)
}
