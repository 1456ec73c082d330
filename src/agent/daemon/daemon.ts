/**
 * The agent daemon behind `edgetoken run`: keeps the access token fresh, ingests MQTT readings
 * into the durable spool, and uploads the spool to the protected API, until stopped.
 *
 * ```
 *   renewer ──(acquireTokenSilent, forced, ahead of expiry)──> token store
 *   MQTT readings ──> ingest (validate) ──> spool (fsync) ──> uploader ──> API
 *   MQTT pair ──> gate (allowPair, nonce, rate, sign-in required) ──> device sign-in ──> token store
 * ```
 *
 * A dead refresh token does not stop anything but renewal and upload: the daemon says so (a
 * warning line, the systemd status, and with MQTT a retained `signin_required` notice on the
 * login topic for the companion display), keeps spooling, and resumes once someone signs in
 * again: through a pair request, or `edgetoken login` run next to it (the daemon notices the new
 * tokens in the store). The notice is cleared then, and when the daemon stops. A pair request is
 * acted on only in that state, and its sign-in may restore the stored account but never replace
 * it with another one (`daemon-login.ts`).
 *
 * A token store that cannot be read (another key, tampered, another machine's: StoreError
 * `ERR_STORE_UNREADABLE`) is not retried: no retry can fix it, and systemd must not restart into
 * it (`RestartPreventExitStatus=6`). Found at the start, nothing else is started; found later (a
 * renewal, an upload, the store watch, a sign-in), the daemon stops as on SIGTERM and then throws it.
 *
 * On stop (SIGTERM): readings in flight reach the disk, the batch in flight gets a short grace,
 * the MQTT status goes `offline`, all within `shutdownTimeoutMs`. Nothing acknowledged (to a
 * sensor's broker or by the API) is lost: the spool keeps every record until the API took it.
 *
 * The log is for a person reading the journal of an SD-card gateway: changes of state and
 * problems, and one summary line every ten minutes (`daemon-summary.ts`); each batch and each
 * renewal is a `debug` line, shown only at that log level. `--json` events are the same at
 * every level.
 *
 * This module only opens the store and the spool and wires the parts together; each part is its
 * own module: the sign-in state (`daemon-signin.ts`), the pair sign-in (`daemon-login.ts`),
 * tokens and renewal (`daemon-tokens.ts`),
 * the MQTT side (`daemon-mqtt.ts`), the uploads (`daemon-uploads.ts`), the periodic summary
 * (`daemon-summary.ts`) and the stop sequence (`daemon-shutdown.ts`).
 *
 * @packageDocumentation
 */
import { requireIdentity } from '../../config/load.js'
import type { EdgeTokenConfig } from '../../config/types.js'
import { isEdgeTokenError } from '../../errors.js'
import type { MachineAcquisition } from '../../store/cache.js'
import type { TokenStore } from '../../store/token-store.js'
import type { Spool } from '../../telemetry/spool/spool.js'
import { waitForSaneClock } from '../clock.js'
import type { IngestCounters } from '../ingest.js'
import type { Notifier } from '../notify.js'
import type { PairCounters } from '../pair.js'
import { createDaemonSignIn } from './daemon-login.js'
import { type DaemonMqtt, startDaemonMqtt } from './daemon-mqtt.js'
import type { DaemonOutput } from './daemon-output.js'
import { shutDown } from './daemon-shutdown.js'
import { createSigninState } from './daemon-signin.js'
import { startDaemonSummary } from './daemon-summary.js'
import { createDaemonTokens, type RefreshFor } from './daemon-tokens.js'
import { type DaemonUploads, startUploads } from './daemon-uploads.js'

/** Options of {@link runDaemon}. */
export interface DaemonOptions {
  /** The loaded configuration (authority and clientId are required). */
  config: EdgeTokenConfig
  /** The environment (key file, systemd credentials). */
  env: NodeJS.ProcessEnv
  /** Stops the daemon (SIGTERM/SIGINT). */
  signal: AbortSignal
  /** Changes of state and the periodic summary (one event each; never a secret). */
  log: (line: string) => void
  /** Warnings (sign-in required, broker trouble, dropped readings). */
  warn: (line: string) => void
  /**
   * Routine lines: each uploaded batch, each renewal. The CLI passes its `log` at the `debug` log
   * level (`--debug`, config `logLevel`); default: dropped, the periodic summary counts them.
   */
  debug?: (line: string) => void
  /** Structured events for `--json` (`ready`, `renewed`, `uploaded`, `signin_required`, `signed_in`, `stopped`). */
  emit?: (event: Readonly<Record<string, unknown>>) => void
  /**
   * The refresh callback of silent acquisition for an authority and client (discovery cached in
   * the state directory, then the refresh grant): the CLI passes its `refreshFor`, so the daemon
   * and `edgetoken token` refresh the same way. The daemon hands it an API's claims challenge and
   * the configured `clientCapabilities`, to be sent as the `claims` parameter.
   */
  refreshFor: RefreshFor
  /**
   * A machine's own acquisition (grant `client_credentials` or `managed_identity`): tokens are
   * acquired again ahead of expiry instead of refreshed, and the first one needs no sign-in.
   */
  machineFor?: (store: TokenStore, signal: AbortSignal | undefined) => MachineAcquisition | undefined
  /** systemd notifications, when started by systemd with `Type=notify`. */
  notifier?: Notifier | undefined
  /** Upper bound of the shutdown, ms. Default 10000. */
  shutdownTimeoutMs?: number
  /** How often an idle spool is checked for new records, ms. Default 2000. */
  idlePollMs?: number
  /** While sign-in is required, how often the store is checked for a new sign-in, ms. Default 10000. */
  signinWatchMs?: number
  /** Renewal timing (tests, and fleets that want a wider window). */
  renewal?: { marginMs?: number; jitterMs?: number }
  /** Period of the summary line, ms. Default 600000 (10 min). */
  summaryIntervalMs?: number
}

/** What {@link runDaemon} reports when it has stopped. */
export interface DaemonSummary {
  /** Token requests made by the renewer. */
  renewals: number
  /** Records the API acknowledged. */
  uploadedRecords: number
  /** MQTT reading counters, when MQTT was configured. */
  ingest?: IngestCounters
  /** Pair request counters, when pairing was enabled. */
  pair?: PairCounters
  /** Whether sign-in was required at the end. */
  signinRequired: boolean
}

const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000

/**
 * Runs the daemon until `options.signal` fires, then shuts down within `shutdownTimeoutMs`.
 *
 * @param options - configuration, stop signal and output.
 * @returns a summary once stopped.
 * @throws ConfigError when authority or clientId is missing; StoreError when the token store
 *   cannot be opened or read, at the start or later (then after the same shutdown as on a stop
 *   signal); EdgeTokenError `ERR_IO` when the spool cannot be opened. Every other failure once
 *   the daemon is running is logged and retried.
 */
export async function runDaemon(options: DaemonOptions): Promise<DaemonSummary> {
  const { config, log, warn } = options
  // Stops the daemon from inside: an unreadable token store ends it like a stop signal.
  const fatal = new AbortController()
  const signal = AbortSignal.any([options.signal, fatal.signal])
  let storeFailure: unknown
  const onStoreUnreadable = (err: unknown) => {
    if (storeFailure !== undefined) return
    storeFailure = err
    // The CLI prints the error itself once stopped; this line marks when it was found.
    warn('the token store cannot be read any more; stopping')
    fatal.abort(err)
  }
  // Every store read of the running daemon goes through this: the failure is fatal, not retried.
  const guarded = <T>(promise: Promise<T>): Promise<T> =>
    promise.catch((err: unknown) => {
      if (isEdgeTokenError(err, 'ERR_STORE_UNREADABLE')) onStoreUnreadable(err)
      throw err
    })
  const emit = options.emit ?? (() => {})
  const output: DaemonOutput = { log, warn, emit, debug: options.debug ?? (() => {}) }
  const identity = requireIdentity(config)
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS
  const summary: DaemonSummary = { renewals: 0, uploadedRecords: 0, signinRequired: false }

  // A Pi without a real-time clock boots in 1970: every token would look expired (or valid).
  try {
    await waitForSaneClock({ signal, onWarning: warn })
  } catch (err) {
    if (isEdgeTokenError(err, 'ERR_CANCELLED')) return summary
    throw err
  }

  const [{ openTokenStore }, cache, { openSpool }] = await Promise.all([
    import('../../store/token-store.js'),
    import('../../store/cache.js'),
    import('../../telemetry/spool/spool.js'),
  ])
  const store: TokenStore = await openTokenStore({
    stateDir: config.stateDir,
    env: options.env,
    keyFile: config.keyFile,
    onWarning: warn,
  })
  // Opening reads no token: read the store now, so that one under another key (or tampered)
  // fails the start (exit 6) before the broker, the spool or the API see this daemon.
  const initialStatus = await cache.readAccountStatus(store, identity)
  const telemetry = config.telemetry
  const spool: Spool = await openSpool(config.stateDir, {
    ...(telemetry?.spoolMaxBytes === undefined ? {} : { maxBytes: telemetry.spoolMaxBytes }),
    // A damaged segment repaired at open is worth one line in the journal.
    onWarning: warn,
  })

  // --- sign-in state and tokens: each stops or resumes the other --------------------------------
  // Assigned below; a sign-in can complete before then, and must not find it uninitialised.
  let uploads: DaemonUploads | undefined
  // A pair request starts a device flow: meaningless for a machine with no user.
  const pairEnabled = config.mqtt?.allowPair === true && config.grant === 'device_code'
  // Assigned once MQTT started (the pair sign-in shows its code on the daemon's relay).
  let mqtt: DaemonMqtt | undefined
  const signIn = createDaemonSignIn({
    identity,
    store,
    dpop: config.dpop,
    get relay() {
      return mqtt?.relay
    },
    output,
  })
  const signin = createSigninState({
    signal,
    output,
    setStatus: (text) => void options.notifier?.status(text),
    pairEnabled,
    // Without pairing it only resumes a sign-in left pending by a stopped login or run (issue 14).
    signIn: config.grant === 'device_code' ? signIn : undefined,
    readStatus: () => cache.readAccountStatus(store, identity),
    onStoreUnreadable,
    watchMs: options.signinWatchMs,
    onRequired: () => tokens.renewer.stop(),
    onSignedIn: () => {
      tokens.renewer.start()
      uploads?.wake()
    },
  })
  const tokens = createDaemonTokens({
    store,
    identity,
    acquireTokenSilent: (s, o) => guarded(cache.acquireTokenSilent(s, o)),
    refreshFor: options.refreshFor,
    clientCapabilities: config.clientCapabilities,
    machineFor: options.machineFor,
    signal,
    renewal: options.renewal,
    output,
    onSigninRequired: (reason) => signin.enter(reason),
  })

  // --- MQTT: presence, ingest, pair -------------------------------------------------------------
  if (config.mqtt) {
    mqtt = await startDaemonMqtt({
      config: config.mqtt,
      deviceId: config.deviceId,
      spool,
      signal,
      output,
      pair: pairEnabled
        ? {
            busy: () => signin.signingIn !== undefined,
            signinRequired: () => signin.required,
            // startSignIn acts only while sign-in is required: a signed-in device is never taken over.
            onPair: () => void signin.startSignIn('pair request from the companion display'),
          }
        : undefined,
    })
    signin.attachRelay(mqtt.relay)
  }

  // --- uploads ----------------------------------------------------------------------------------
  if (telemetry?.endpoint) {
    uploads = await startUploads({
      spool,
      endpoint: telemetry.endpoint,
      telemetry,
      deviceId: config.deviceId,
      shutdownTimeoutMs,
      idlePollMs: options.idlePollMs,
      // The token with its type and DPoP key: a DPoP-bound one goes out with a proof (issue 14).
      // A 401 claims challenge (issue 13) is answered by a refresh that asks for those claims.
      getAccessToken: ({ forceRefresh, claims }) => tokens.getToken(forceRefresh, undefined, claims),
      signal,
      output,
      isSigninRequired: () => signin.required,
      onSigninRequired: (reason) => signin.enter(reason),
    })
  } else {
    log('edgetoken: no telemetry.endpoint configured: readings are spooled, not uploaded')
  }

  // --- start ------------------------------------------------------------------------------------
  // A machine acquires with its own credential, at once: a rejection then reports itself.
  if (initialStatus.signedIn || options.machineFor) tokens.renewer.start()
  else {
    signin.enter(initialStatus.needsSignIn ? 'the refresh token was rejected' : 'not signed in')
    // issue 14: a device code still pending when login or run stopped goes on, same code.
    if (config.grant === 'device_code') {
      void import('../../store/pending-signin.js')
        .then(({ readPendingSignIn }) => readPendingSignIn(store, identity))
        .then((pending) => {
          if (pending !== undefined) signin.startSignIn('resuming the pending sign-in')
        })
        .catch(() => {})
    }
  }
  const stopWatchdog = options.notifier?.startWatchdog()
  void options.notifier?.ready(signin.status)
  log(`edgetoken: agent running for device ${config.deviceId} (pid ${process.pid})`)
  emit({ event: 'ready', device_id: config.deviceId })
  // Each batch and renewal is a debug line; the journal gets these totals every ten minutes.
  const periodic = startDaemonSummary({
    intervalMs: options.summaryIntervalMs,
    totals: () => ({
      uploadedRecords: uploads?.uploadedRecords ?? 0,
      uploadedBatches: uploads?.uploadedBatches ?? 0,
      renewals: tokens.renewals,
      received: mqtt?.ingest.counters.received,
    }),
    // pollPending: an idle spool is two stat calls, no lock file written on the SD card.
    pending: () => spool.pollPending(),
    log,
  })

  // Every other timer is unref'd (so a stopped daemon exits at once); this one keeps the process
  // alive while running, and never fires in practice (about 24.8 days).
  const keepAlive = setInterval(() => {}, 2 ** 31 - 1)
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve()
    else signal.addEventListener('abort', () => resolve(), { once: true })
  })
  clearInterval(keepAlive)
  periodic.stop()

  // --- stop -------------------------------------------------------------------------------------
  await shutDown({
    timeoutMs: shutdownTimeoutMs,
    output,
    notifier: options.notifier,
    renewer: tokens.renewer,
    signin,
    mqtt,
    uploads,
    spool,
  })
  stopWatchdog?.()
  options.notifier?.close()
  summary.renewals = tokens.renewals
  summary.uploadedRecords = uploads?.uploadedRecords ?? 0
  summary.signinRequired = signin.required
  if (mqtt) summary.ingest = { ...mqtt.ingest.counters }
  if (mqtt?.pairCounters) summary.pair = { ...mqtt.pairCounters }
  emit({ event: 'stopped', uploaded_records: summary.uploadedRecords, renewals: summary.renewals })
  log(`edgetoken: stopped (${summary.renewals} renewals, ${summary.uploadedRecords} records uploaded)`)
  if (storeFailure !== undefined) throw storeFailure
  return summary
}
