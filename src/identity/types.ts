/** Who the request is from, after a bearer token or a session was verified. Values are already safe for headers. */
export interface Identity {
  /** The user id header value, prefix included (kubeflow-userid). */
  user: string;
  email: string | undefined;
  /** Group names with prefix, each free of CR, LF, NUL and with commas percent-encoded. */
  groups: readonly string[];
  preferredUsername: string | undefined;
  /** `sub` of the token. */
  subject: string;
  /** Name (from the config) of the issuer or provider that vouched for this identity. */
  source: string;
}
