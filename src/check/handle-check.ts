import { unavailable } from '../decision/local-reply.js';
import { REASONS, resultOf, type DecisionResult, type Reason } from '../decision/reasons.js';
import type { Decision } from '../decision/types.js';
import { LogRateLimiter } from '../telemetry/log-limiter.js';
import type { Logger } from '../telemetry/logger.js';
import type { CounterChild, Metrics } from '../telemetry/metrics.js';
import type { Decider } from './decide.js';
import type { CheckInput } from './types.js';
import { encodeDecisionResponse } from './wire/check-codec.js';
import { StoreUnavailableError } from '../session/types.js';
import { traceServer, type SpanAttributes } from '../telemetry/tracing.js';

/** The span of one check, by the gRPC method it implements (`package.Service/Method`); the HTTP listener's checks too. */
const CHECK_SPAN = 'envoy.service.auth.v3.Authorization/Check';
const headersOf = (input: CheckInput) => (input.kind === 'http' ? input.http.headers : undefined);

/** Turns a finished decision into one transport's answer; may throw (the wrapper then answers `internal_error`). */
export type DecisionEncoder<Out> = (decision: Decision, input: CheckInput) => Out;

/** Decides one check and encodes it for a transport; always resolves (faults are already an explicit deny). */
export type TransportHandler<Out> = (input: CheckInput) => Promise<Out>;

/** The options every transport's wrapper shares: what a fault answers and how many reply lines a reason may log. */
export interface DecisionWrapperOptions {
  /** `decision.errorStatus`. */
  errorStatus: number;
  /** `log.denyLinesPerSecond`. */
  replyLinesPerSecond: number;
}

/**
 * The one wrapper around the ladder, shared by the gRPC and HTTP transports: times the decision, counts it by result
 * and reason, logs local replies, and turns any fault (in the ladder or in the transport's encoder) into an explicit
 * deny, so a proxy never sees an empty (allowing) answer or a transport error it might fail open on.
 * Reply lines are limited to `replyLinesPerSecond` per reason, then one `log lines suppressed` line per reason and
 * second says how many were dropped; the counters count every check. Build it once; `forTransport` once per
 * transport: both share the counters and the limiter.
 */
export function createDecisionWrapper(decider: Decider, metrics: Metrics, logger: Logger, options: DecisionWrapperOptions) {
  // Per reason, the counter for an allowing and for a refusing response: no label string built per check.
  const allowCount = new Map<Reason, CounterChild>();
  const replyCount = new Map<Reason, { result: DecisionResult; counter: CounterChild }>();
  for (const reason of REASONS) {
    allowCount.set(reason, metrics.decisions.child({ result: 'allow', reason }));
    const result = resultOf(reason, false);
    replyCount.set(reason, { result, counter: metrics.decisions.child({ result, reason }) });
  }
  const histogram = metrics.checkDuration;
  const limiter = new LogRateLimiter<Reason>(options.replyLinesPerSecond, (reason, suppressed, windowMs) =>
    logger.info({ reason, result: replyCount.get(reason)!.result, suppressed, windowMs }, 'log lines suppressed'),
  );
  const storeDown = unavailable('store_unavailable', options.errorStatus);
  const internal = unavailable('internal_error', options.errorStatus);

  const decide = (input: CheckInput) => decider.decide(input);
  // Names only (route, issuer, reason codes): never a header, a path or an identity.
  const describe = (decision: Decision, input: CheckInput): SpanAttributes => ({
    'authz.reason': decision.reason,
    'authz.result': resultOf(decision.reason, isAllow(decision)),
    'authz.route': input.kind === 'http' ? decider.routeName(input.http) : input.kind,
    ...(decision.issuer !== undefined ? { 'authz.issuer': decision.issuer } : {}),
  });

  const count = (decision: Decision, input: CheckInput, start: number): void => {
    const kind = decision.response.kind;
    histogram.observe((performance.now() - start) / 1000);
    if (kind === 'prepared' || kind === 'allow') {
      allowCount.get(decision.reason)!.inc();
    } else {
      const reply = replyCount.get(decision.reason)!;
      reply.counter.inc();
      if (logger.isLevelEnabled('info') && limiter.allow(decision.reason)) logReply(logger, reply.result, decision, input);
    }
  };

  const finish = <Out>(encode: DecisionEncoder<Out>, decision: Decision, input: CheckInput, start: number): Out => {
    let out: Out;
    try {
      out = encode(decision, input);
    } catch (err) {
      logger.error({ err: err instanceof Error ? err.message : String(err) }, 'encoding failed');
      decision = internal;
      out = encode(internal, input);
    }
    count(decision, input, start);
    return out;
  };

  return {
    /** The handler of one transport: decide, encode with `encode`, count once whatever happened. */
    forTransport<Out>(encode: DecisionEncoder<Out>): TransportHandler<Out> {
      return async function handle(input: CheckInput): Promise<Out> {
        const start = performance.now();
        let decision: Decision;
        try {
          decision = await traceServer(CHECK_SPAN, input, headersOf, decide, describe);
        } catch (err) {
          decision = err instanceof StoreUnavailableError ? storeDown : internal;
          logger.error({ reason: decision.reason, err: err instanceof Error ? err.message : String(err) }, 'decision failed');
        }
        return finish(encode, decision, input, start);
      };
    },
    /**
     * A refusal the transport made before the ladder (a peer it does not trust): encoded, counted and logged like
     * any decision, so it shows in the same metrics and the same limited log lines.
     */
    refused<Out>(encode: DecisionEncoder<Out>, decision: Decision, input: CheckInput): Out {
      return finish(encode, decision, input, performance.now());
    },
  };
}

/** The wrapper's shape, for the transports that take it. */
export type DecisionWrapper = ReturnType<typeof createDecisionWrapper>;

/** The gRPC transport's encoder: CheckResponse bytes (a cached allow's own bytes when nothing was added). */
export const encodeGrpcDecision: DecisionEncoder<Buffer> = (decision) => encodeDecisionResponse(decision.response);

/**
 * The gRPC Check handler: the shared wrapper with the CheckResponse encoder. Kept as the one-call form for the
 * gRPC-only callers (tests, benches); the app builds one wrapper and asks it for each transport.
 */
export function createCheckHandler(decider: Decider, metrics: Metrics, logger: Logger, errorStatus: number, replyLinesPerSecond: number) {
  return createDecisionWrapper(decider, metrics, logger, { errorStatus, replyLinesPerSecond }).forTransport(encodeGrpcDecision);
}

/** A prepared response is always an allow (a cached, pre-encoded one). */
function isAllow(decision: Decision): boolean {
  const kind = decision.response.kind;
  return kind === 'prepared' || kind === 'allow';
}

/**
 * One line per local reply, named for its result (`deny`, or `handled` for a finished login or logout). The path is
 * logged without its query: callbacks carry codes and states there.
 */
function logReply(logger: Logger, result: DecisionResult, decision: Decision, input: CheckInput): void {
  const http = input.kind === 'http' ? input.http : undefined;
  const response = decision.response;
  const status = response.kind === 'deny' ? response.status : 200;
  const path = http?.path;
  const q = path?.indexOf('?') ?? -1;
  logger.info(
    {
      reason: decision.reason satisfies Reason,
      status,
      method: http?.method,
      host: http?.host,
      path: q === -1 ? path : path!.slice(0, q),
      requestId: http?.headers['x-request-id'],
      ...(decision.detail ? { detail: decision.detail } : {}),
    },
    result,
  );
}
