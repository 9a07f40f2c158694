import { unavailable } from '../decision/local-reply.js';
import { REASONS, resultOf, type DecisionResult, type Reason } from '../decision/reasons.js';
import type { Decision } from '../decision/types.js';
import { LogRateLimiter } from '../telemetry/log-limiter.js';
import type { Logger } from '../telemetry/logger.js';
import type { CounterChild, Metrics } from '../telemetry/metrics.js';
import type { Decider } from './decide.js';
import type { CheckInput } from './types.js';
import { encodeCheckResponse } from './wire/check-codec.js';
import { StoreUnavailableError } from '../session/types.js';

/**
 * Wraps the ladder for the gRPC server: times the decision, counts it by result and reason, logs local replies, and turns
 * any fault into an explicit deny so Envoy never sees an empty (allowing) response or a gRPC error it might fail open on.
 * Reply lines are limited to `replyLinesPerSecond` per reason (`log.denyLinesPerSecond`), then one `log lines
 * suppressed` line per reason and second says how many were dropped; the counters count every check.
 */
export function createCheckHandler(decider: Decider, metrics: Metrics, logger: Logger, errorStatus: number, replyLinesPerSecond: number) {
  // Per reason, the counter for an allowing and for a refusing response: no label string built per check.
  const allowCount = new Map<Reason, CounterChild>();
  const replyCount = new Map<Reason, { result: DecisionResult; counter: CounterChild }>();
  for (const reason of REASONS) {
    allowCount.set(reason, metrics.decisions.child({ result: 'allow', reason }));
    const result = resultOf(reason, false);
    replyCount.set(reason, { result, counter: metrics.decisions.child({ result, reason }) });
  }
  const histogram = metrics.checkDuration;
  const limiter = new LogRateLimiter<Reason>(replyLinesPerSecond, (reason, suppressed, windowMs) => {
    const result = replyCount.get(reason)!.result;
    // Once per reason and window, never per check: the label lookup is off the hot path.
    metrics.logLinesSuppressed.child({ reason, result }).inc(suppressed);
    logger.info({ reason, result, suppressed, windowMs }, 'log lines suppressed');
  });
  const storeDown = unavailable('store_unavailable', errorStatus);
  const internal = unavailable('internal_error', errorStatus);

  const finish = (decision: Decision, input: CheckInput, start: number): Buffer => {
    const response = decision.response;
    const bytes = Buffer.isBuffer(response) ? response : encodeCheckResponse(response);
    const allowed = Buffer.isBuffer(response) || response.kind === 'allow';
    histogram.observe((performance.now() - start) / 1000);
    if (allowed) {
      allowCount.get(decision.reason)!.inc();
    } else {
      const reply = replyCount.get(decision.reason)!;
      reply.counter.inc();
      if (logger.isLevelEnabled('info') && limiter.allow(decision.reason)) logReply(logger, reply.result, decision, input);
    }
    return bytes;
  };

  return async function handleCheck(input: CheckInput): Promise<Buffer> {
    const start = performance.now();
    let decision: Decision;
    try {
      decision = await decider.decide(input);
    } catch (err) {
      decision = err instanceof StoreUnavailableError ? storeDown : internal;
      logger.error({ reason: decision.reason, err: err instanceof Error ? err.message : String(err) }, 'decision failed');
    }
    try {
      return finish(decision, input, start);
    } catch (err) {
      logger.error({ err: err instanceof Error ? err.message : String(err) }, 'encoding failed');
      return finish(internal, input, start);
    }
  };
}

/**
 * One line per local reply, named for its result (`deny`, or `handled` for a finished login or logout). The path is
 * logged without its query: callbacks carry codes and states there.
 */
function logReply(logger: Logger, result: DecisionResult, decision: Decision, input: CheckInput): void {
  const http = input.kind === 'http' ? input.http : undefined;
  const status = Buffer.isBuffer(decision.response) ? undefined : decision.response.kind === 'deny' ? decision.response.status : 200;
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
