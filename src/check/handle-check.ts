import { unavailable } from '../decision/local-reply.js';
import { REASONS, type Reason } from '../decision/reasons.js';
import type { Decision } from '../decision/types.js';
import type { Logger } from '../telemetry/logger.js';
import type { CounterChild, Metrics } from '../telemetry/metrics.js';
import type { Decider } from './decide.js';
import type { CheckInput } from './types.js';
import { encodeCheckResponse } from './wire/check-codec.js';
import { StoreUnavailableError } from '../session/types.js';

/**
 * Wraps the ladder for the gRPC server: times the decision, counts it by result and reason, logs denies, and turns
 * any fault into an explicit deny so Envoy never sees an empty (allowing) response or a gRPC error it might fail open on.
 */
export function createCheckHandler(decider: Decider, metrics: Metrics, logger: Logger, errorStatus: number) {
  const counters = new Map<string, CounterChild>();
  for (const reason of REASONS) {
    for (const result of ['allow', 'deny'] as const) counters.set(`${result}:${reason}`, metrics.decisions.child({ result, reason }));
  }
  const histogram = metrics.checkDuration;
  const storeDown = unavailable('store_unavailable', errorStatus);
  const internal = unavailable('internal_error', errorStatus);

  const finish = (decision: Decision, input: CheckInput, start: number): Buffer => {
    const response = decision.response;
    const bytes = Buffer.isBuffer(response) ? response : encodeCheckResponse(response);
    const allowed = Buffer.isBuffer(response) || response.kind === 'allow';
    counters.get(`${allowed ? 'allow' : 'deny'}:${decision.reason}`)!.inc();
    histogram.observe((performance.now() - start) / 1000);
    if (!allowed && logger.isLevelEnabled('info')) logDeny(logger, decision, input);
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

/** One line per deny. The path is logged without its query: callbacks carry codes and states there. */
function logDeny(logger: Logger, decision: Decision, input: CheckInput): void {
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
    'deny',
  );
}
