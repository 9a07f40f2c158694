import type { Config } from '../config/schema.js';
import type { Decision } from '../decision/types.js';
import type { DecisionEncoder, DecisionWrapper, TransportHandler } from './handle-check.js';
import type { CheckInput } from './types.js';

/** One readiness input of an engine: a name for /readyz, whether it is ready, and a secret-free detail. */
export interface EngineReadiness {
  name: string;
  ready: () => boolean;
  detail?: () => unknown;
}

/** Answer to an OIDC back-channel logout POST (see src/oidc/backchannel.ts). */
export interface EngineBackchannelReply {
  status: number;
  headers: Record<string, string>;
  body: string;
  detail: string;
}

/**
 * Everything that depends on one config, built together from it: routes, identity headers, verifier, caches, browser
 * flow, decider and check handler. Every transport (gRPC Check today) decides through an engine, never through its
 * parts, so a reload swaps one object and no check sees old routes with new issuers.
 */
export interface Engine {
  /** The config this engine was built from (validated and frozen). */
  readonly config: Config;
  /** Decides one Check and encodes the gRPC CheckResponse; counts and logs it; never rejects (faults are a deny). */
  check(input: CheckInput): Promise<Buffer>;
  /** The wrapper every transport encodes its answers through (metrics, log limits, fail-closed). */
  readonly wrapper: DecisionWrapper;
  /** The bare decision ladder (no metrics, no log line), for a transport that encodes the answer itself. */
  decide(input: CheckInput): Promise<Decision>;
  /** What /readyz reports for this engine, in order. */
  readonly readiness: readonly EngineReadiness[];
  /** OIDC back-channel logout for a provider; undefined without a browser flow. */
  readonly backchannelLogout: ((provider: string, formBody: string) => Promise<EngineBackchannelReply>) | undefined;
  /** First key set and discovery fetches; never rejects (an IdP that is down must not stop the server). */
  start(): Promise<void>;
  /** Stops timers and closes what this engine owns. Called once no check runs on it any more. */
  close(): Promise<void>;
}

/**
 * The one reference the transports call through. `swap` replaces the engine for every later check at once; a check
 * keeps the engine it started on until it ends, and a replaced engine is closed when its last check has ended.
 */
export class EngineSlot {
  private engine: Engine;
  private readonly inflight = new Map<Engine, number>();
  private readonly retiring = new Map<Engine, () => void>();

  constructor(engine: Engine) {
    this.engine = engine;
  }

  /** The engine later checks run on. */
  get current(): Engine {
    return this.engine;
  }

  /** Runs one check on the current engine, which stays open until the check has finished. */
  check(input: CheckInput): Promise<Buffer> {
    const engine = this.engine;
    this.enter(engine);
    return engine.check(input).finally(() => this.leave(engine));
  }

  /** As `check`, for transports that want the bare decision. */
  decide(input: CheckInput): Promise<Decision> {
    const engine = this.engine;
    this.enter(engine);
    return engine.decide(input).finally(() => this.leave(engine));
  }

  /**
   * A wrapper with the shape of one engine's, for transports built once at start (the HTTP listener): each handler it
   * gives runs on the current engine, through that engine's own wrapper (one handler per engine and encoder, made on
   * its first check), and keeps the engine open until the answer is written.
   */
  readonly wrapper: DecisionWrapper = {
    forTransport: <Out>(encode: DecisionEncoder<Out>): TransportHandler<Out> => {
      const handlers = new WeakMap<Engine, TransportHandler<Out>>();
      return (input: CheckInput): Promise<Out> => {
        const engine = this.engine;
        let handler = handlers.get(engine);
        if (handler === undefined) {
          handler = engine.wrapper.forTransport(encode);
          handlers.set(engine, handler);
        }
        this.enter(engine);
        return handler(input).finally(() => this.leave(engine));
      };
    },
    refused: <Out>(encode: DecisionEncoder<Out>, decision: Decision, input: CheckInput): Out => this.engine.wrapper.refused(encode, decision, input),
  };

  /** Checks running on the engine that is not current any more (0 once replaced engines are drained). */
  get retiredInFlight(): number {
    let n = 0;
    for (const [engine, count] of this.inflight) if (engine !== this.engine) n += count;
    return n;
  }

  /**
   * Makes `next` current, then resolves once every check that started on the previous engine has ended and it has
   * been closed. A close failure is passed to `onCloseError` (the new engine serves anyway).
   */
  swap(next: Engine, onCloseError: (err: unknown) => void = () => {}): Promise<void> {
    const previous = this.engine;
    if (previous === next) return Promise.resolve();
    this.engine = next;
    return new Promise<void>((resolve) => {
      const close = () => {
        this.retiring.delete(previous);
        previous.close().then(resolve, (err: unknown) => {
          onCloseError(err);
          resolve();
        });
      };
      if ((this.inflight.get(previous) ?? 0) === 0) close();
      else this.retiring.set(previous, close);
    });
  }

  private enter(engine: Engine): void {
    this.inflight.set(engine, (this.inflight.get(engine) ?? 0) + 1);
  }

  private leave(engine: Engine): void {
    const left = this.inflight.get(engine)! - 1;
    if (left > 0) {
      this.inflight.set(engine, left);
      return;
    }
    this.inflight.delete(engine);
    this.retiring.get(engine)?.();
  }
}
