# The OPA peer's policy: the same decision this product makes for a bearer token. Verify the RS256/ES256 signature
# against the issuer's JWKS (inlined as data.bench.jwks: fetched once by the harness, no http.send on the hot path),
# the exact issuer and the audience (io.jwt.decode_verify also checks exp and nbf), then allow with the identity
# headers (kubeflow-userid, kubeflow-groups) and deny everything else with 401.
package envoy.authz

default allow := {"allowed": false, "http_status": 401}

bearer := t if {
	auth := input.attributes.request.http.headers.authorization
	startswith(auth, "Bearer ")
	t := substring(auth, 7, -1)
}

claims := payload if {
	[valid, _, payload] := io.jwt.decode_verify(bearer, {"cert": data.bench.jwks, "iss": data.bench.issuer, "aud": data.bench.audience})
	valid
}

allow := {
	"allowed": true,
	"headers": {
		"kubeflow-userid": claims.email,
		"kubeflow-groups": concat(",", claims.groups),
	},
	"request_headers_to_remove": ["authorization"],
} if claims.email
