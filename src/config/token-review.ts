import { z } from 'zod';

/** Where a pod finds its own ServiceAccount credentials (the kubelet's projected volume). */
export const IN_CLUSTER_CA_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt';
export const IN_CLUSTER_TOKEN_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/token';
/** The issuer of legacy secret-based ServiceAccount tokens (Kubernetes pkg/serviceaccount/legacy.go). */
export const KUBERNETES_LEGACY_ISSUER = 'kubernetes/serviceaccount';

/**
 * `issuers[].tokenReview`: ask the Kubernetes API server (POST /apis/authentication.k8s.io/v1/tokenreviews) whether a
 * ServiceAccount token that verified locally is still alive, and take the identity from its answer. Opt-in: it costs
 * one API call per token and cache TTL, and the service's ServiceAccount needs `system:auth-delegator`.
 * Every default is the pod's own in-cluster configuration.
 */
export const tokenReviewSchema = z.strictObject({
  /** https only: the review carries the service's own token and the client's. */
  url: z.url({ protocol: /^https$/ }).default('https://kubernetes.default.svc'),
  /** The API server's CA (the pod's ca.crt); re-read on each review, so a rotated bundle is picked up. */
  caFile: z.string().min(1).default(IN_CLUSTER_CA_FILE),
  /** The service's own token, which authenticates the review (needs system:auth-delegator); re-read on each review. */
  tokenFile: z.string().min(1).default(IN_CLUSTER_TOKEN_FILE),
  /** `spec.audiences` of the review; default the issuer's `audiences`. */
  audiences: z.array(z.string().min(1)).min(1).optional(),
  /**
   * A reviewed answer is reused this long, and never past the token's `exp`: a deleted ServiceAccount, pod or
   * Secret is seen within this time. Capped because every second keeps a dead token alive longer.
   */
  cacheTtlSeconds: z.number().min(1).max(3600).default(60),
  /** Bound of the review cache: a flood of distinct tokens cannot grow memory. */
  maxEntries: z.number().int().min(1).max(1_000_000).default(10_000),
  /** A hanging API server costs a check at most this long, then an explicit 503; below the mesh's 2 s timeout. */
  timeoutMs: z.number().int().min(100).max(60000).default(1500),
});

/** `issuers[].tokenReview` after parsing (defaults filled in). */
export type TokenReviewConfig = z.infer<typeof tokenReviewSchema>;
