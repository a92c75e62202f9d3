// Verifies a JWT the way an independent relying party would, with the
// `jose` package (not the JOSE crate the controller signs with): the key
// from the issuer's JWK Set fetched over HTTP, the algorithm allow-list,
// `typ`, `iss`, `aud` and the times checked by jose itself.
//
// Input (stdin, JSON): {"token", "jwks_uri", "issuer", "audience", "typ"}.
// Output (stdout, JSON): {"ok": true, "header", "payload"} or
// {"ok": false, "code", "message"}. Used by controller/tests/logout.rs.
import { createRemoteJWKSet, jwtVerify } from "jose";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { token, jwks_uri, issuer, audience, typ } = JSON.parse(input);
try {
  const jwks = createRemoteJWKSet(new URL(jwks_uri));
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    issuer,
    audience,
    typ,
    algorithms: ["RS256", "ES256"],
    maxTokenAge: "10 minutes",
    requiredClaims: ["iat", "exp", "jti"],
  });
  process.stdout.write(JSON.stringify({ ok: true, header: protectedHeader, payload }));
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, code: e.code ?? "", message: String(e.message) }));
}
