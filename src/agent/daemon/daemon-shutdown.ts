/**
 * The daemon's stop sequence, bounded by the shutdown budget: readings in flight reach the disk
 * first, then the upload loop and a sign-in in progress end, the sign-in notice goes, what is
 * left gets one quick upload attempt, the MQTT status goes `offline`, and everything is closed.
 *
 * Separate from the daemon because the order is the point: each step relies on the ones before it
 * (nothing is closed while something may still write to it), and the budget is shared between
 * them. Nothing acknowledged is lost when the budget runs out: the spool keeps every record until
 * the API took it.
 *
 * @packageDocumentation
 */

import { withDeadline } from '../../lib/deadline.js'
import type { Spool } from '../../telemetry/spool/spool.js'
import type { Notifier } from '../notify.js'
import type { Renewer } from '../renewer.js'
import type { DaemonMqtt } from './daemon-mqtt.js'
import type { DaemonOutput } from './daemon-output.js'
import type { SigninState } from './daemon-signin.js'
import type { DaemonUploads } from './daemon-uploads.js'

/** The final upload attempt's bound, ms; it is only made when the budget has this much left. */
const FINAL_FLUSH_MS = 2000
/** What the budget keeps back for closing the connection and files, ms. */
const CLOSE_RESERVE_MS = 1000
/** Bound of the `offline` status publish, ms. */
const OFFLINE_PUBLISH_MS = 1000
/** Bound of the MQTT client's clean disconnect, ms; it is then ended forcibly. */
const DISCONNECT_MS = 500

/** The running parts {@link shutDown} stops. */
export interface ShutdownParts {
  /** The shutdown budget, ms. */
  timeoutMs: number
  /** Log and warnings. */
  output: Pick<DaemonOutput, 'log' | 'warn'>
  /** systemd notifications. */
  notifier: Notifier | undefined
  /** The renewer. */
  renewer: Renewer
  /** The sign-in state (its store watch, the sign-in in progress). */
  signin: SigninState
  /** The MQTT side, when configured. */
  mqtt: DaemonMqtt | undefined
  /** The uploads, when an endpoint is configured. */
  uploads: DaemonUploads | undefined
  /** The spool. */
  spool: Spool
}

/**
 * Stops the daemon's parts in order within `parts.timeoutMs` (warns when it took longer). The
 * caller ends the systemd watchdog and notifier, and reports, after this.
 *
 * @param parts - the running parts and the budget.
 * @returns once everything is closed. Failures of the final upload attempt, of the `offline`
 *   publish and of the closes at the end are ignored: the spool is durable on every append.
 */
export async function shutDown(parts: ShutdownParts): Promise<void> {
  const { timeoutMs, mqtt, uploads, signin, spool } = parts
  const { log, warn } = parts.output
  const stopStarted = Date.now()
  const left = () => timeoutMs - (Date.now() - stopStarted)
  log('edgetoken: stopping')
  void parts.notifier?.stopping('stopping')
  parts.renewer.stop()
  signin.stopWatching()
  const finished = await withDeadline(
    (async () => {
      await mqtt?.pairListener?.close()
      // Readings already received reach the disk before anything else closes. The subscription
      // stays in the broker's session: readings published until the next start are queued.
      await mqtt?.ingest.close({ unsubscribe: false })
      await uploads?.done
      await signin.signingIn
      // Nobody acts on a pair request once we are gone: the notice goes with us.
      await mqtt?.relay.close()
      if (uploads && !signin.required && left() > FINAL_FLUSH_MS) {
        // One quick, bounded attempt to send what is left; the spool keeps it otherwise.
        await uploads.uploader
          .drain({ signal: AbortSignal.timeout(FINAL_FLUSH_MS), maxRetries: 0, maxWaitMs: 0 })
          .catch(() => undefined)
      }
      if (mqtt?.client.connected) {
        await withDeadline(
          mqtt.client.publishAsync(mqtt.topics.status, 'offline', { qos: 1, retain: true }),
          OFFLINE_PUBLISH_MS,
        ).catch(() => undefined)
      }
      return true
    })(),
    Math.max(0, left() - CLOSE_RESERVE_MS),
  )
  if (!finished) warn(`shutdown took longer than ${timeoutMs} ms; the spool keeps what was not sent`)
  await withDeadline(mqtt?.client.endAsync().catch(() => undefined) ?? Promise.resolve(), DISCONNECT_MS)
  mqtt?.client.end(true)
  await uploads?.uploader.close().catch(() => undefined)
  await spool.close().catch(() => undefined)
}
