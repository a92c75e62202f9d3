// A test OpenID Connect provider for Vigil's integration tests; never deployed.
//
//   node idp.mjs CONFIG.json
//
// CONFIG.json: {"port": 0, "clients": [{client_id, client_secret,
// redirect_uris}], "accounts": {"alice": {password, otp, email,
// stale_auth_time?, groups?}}}. Port 0 takes any free port. An account's
// groups (a list of strings) are its "groups" claim, in the ID token when
// the client asks for the "groups" scope (the controller's dashboard
// sign-in maps them to roles).
//
// Serves http://127.0.0.1:PORT only. Once it serves, it prints one line to
// stdout, {"issuer":"http://127.0.0.1:PORT"}, and nothing else there; every
// log goes to stderr.
//
// Besides the provider's own endpoints it serves:
// - GET  /interaction/:uid        a plain HTML login form (login, password, otp);
// - POST /interaction/:uid/login  checks it: an OTP makes acr urn:vigil:mfa,
//                                 amr [pwd, otp]; without, urn:vigil:pwd, [pwd];
// - POST /test/rotate-keys        a new signing key with a new kid: {"kid": …}.
// - GET  /test/sid?account=ID      the sid of the IdP session that last
//                                  signed ID in: {"sid": … or null}.
//
// A client with backchannel_logout_uri (and
// backchannel_logout_session_required) turns on oidc-provider's
// back-channel logout: its ID tokens carry sid, and ending the IdP session
// posts a logout_token there.

import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

// oidc-provider prints its notices with console.info, which is stdout; the
// stdout line is the contract with the test harness, so every log goes to
// stderr.
console.info = console.error;
console.log = console.error;

const PWD = 'urn:vigil:pwd';
const MFA = 'urn:vigil:mfa';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts ?? {};

// The first login time of each account with "stale_auth_time": an IdP that
// does not advance auth_time when its user re-authenticates. Kept outside
// the provider so a key rotation does not reset it.
const firstLogin = new Map();

// The sid of the IdP session each account last signed in with, for the
// test hook: the relying party sees it only inside the ID token.
const lastSid = new Map();

// Cookie signing keys: any random value; sessions only live as long as the
// process.
const cookieKeys = [randomBytes(32).toString('hex')];

let provider;
const server = createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error('idp: request failed:', err);
    if (!res.headersSent) {
      res.statusCode = 500;
    }
    res.end();
  });
});

server.listen(config.port ?? 0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  provider = newProvider(issuer);
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

// Our routes first; everything else is the provider's.
async function handle(req, res) {
  const url = new URL(req.url, provider.issuer);
  const login = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (req.method === 'POST' && url.pathname === '/test/rotate-keys') {
    // A new Provider is the simplest way to change its keys: the old one's
    // in-memory sessions, codes and grants go with it, which the tests accept.
    provider = newProvider(provider.issuer);
    return send(res, 200, 'application/json', JSON.stringify({ kid: provider.kid }));
  }
  if (req.method === 'GET' && url.pathname === '/test/sid') {
    const sid = lastSid.get(url.searchParams.get('account') ?? '') ?? null;
    return send(res, 200, 'application/json', JSON.stringify({ sid }));
  }
  if (login && req.method === 'GET' && !login[2]) {
    const details = await provider.interactionDetails(req, res);
    return send(res, 200, 'text/html', loginPage(details.uid, ''));
  }
  if (login && req.method === 'POST' && login[2]) {
    return submitLogin(req, res);
  }
  return provider.callback()(req, res);
}

async function submitLogin(req, res) {
  const details = await provider.interactionDetails(req, res);
  const form = new URLSearchParams(await readBody(req));
  const id = form.get('login') ?? '';
  const account = Object.hasOwn(accounts, id) ? accounts[id] : undefined;
  if (!account || form.get('password') !== account.password) {
    // 200 with the form again, as a real IdP's login page answers.
    return send(res, 200, 'text/html', loginPage(details.uid, 'invalid login or password'));
  }
  // A wrong OTP is not an error: it is a password-only login.
  const otp = form.get('otp');
  const mfa = Boolean(otp) && otp === account.otp;
  let ts = Math.floor(Date.now() / 1000);
  if (account.stale_auth_time) {
    if (!firstLogin.has(id)) firstLogin.set(id, ts);
    ts = firstLogin.get(id);
  }
  const result = {
    login: { accountId: id, ts, acr: mfa ? MFA : PWD, amr: mfa ? ['pwd', 'otp'] : ['pwd'] },
  };
  // Answers 303 to the authorization endpoint's resume URL.
  return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

function newProvider(issuer) {
  const kid = `test-${randomUUID()}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };

  // Nothing here relaxes oidc-provider's https or loopback rules, because
  // none applies to this provider: it accepts an http issuer, and http
  // redirect URIs on 127.0.0.1 or localhost for web clients of the code
  // flow (it refuses them only for the implicit flow); and it never fetches
  // a client's URL (no jwks_uri, request_uri or sector_identifier_uri), as
  // the clients authenticate with secrets.
  const p = new Provider(issuer, {
    clients: (config.clients ?? []).map((c) => ({
      ...c,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      // client_secret_basic registered; oidc-provider then also accepts
      // client_secret_post from the same client.
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    })),
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    jwks: { keys: [jwk] },
    cookies: { keys: cookieKeys },
    acrValues: [PWD, MFA],
    scopes: ['openid', 'email', 'groups'],
    // oidc-provider puts acr, amr and auth_time in an ID token only when the
    // request asks for them (acr_values, the claims parameter, max_age);
    // as claims of the openid scope they are in every one, as the relying
    // party expects.
    claims: { openid: ['sub', 'acr', 'amr', 'auth_time'], email: ['email'], groups: ['groups'] },
    // By default a code flow's ID token leaves the scope's claims (email)
    // to userinfo; the relying party reads them from the ID token.
    conformIdTokenClaims: false,
    // PKCE for every client, confidential ones included (S256 is the only
    // method oidc-provider 9 knows).
    pkce: { required: () => true },
    // Short lives, set here so oidc-provider does not log a notice for each
    // default it uses; the tests last seconds.
    ttl: { AccessToken: 600, IdToken: 600, Grant: 3600, Interaction: 600, Session: 3600 },
    features: {
      // Ours below, not the development forms.
      devInteractions: { enabled: false },
      backchannelLogout: {
        enabled: (config.clients ?? []).some((c) => c.backchannel_logout_uri),
      },
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    // oidc-provider refuses to send requests (back-channel logout tokens)
    // to special-use addresses such as 127.0.0.1, a protection for a
    // deployed provider against SSRF. This one exists only on loopback,
    // where its relying party (Vigil's controller) listens too: its own
    // dispatcher is left out so those requests go out.
    fetch: (url, options) => {
      const { dispatcher: _ssrfGuard, ...rest } = options;
      return globalThis.fetch(url, rest);
    },
    findAccount: (_ctx, id) =>
      Object.hasOwn(accounts, id)
        ? {
            accountId: id,
            claims: () => ({ sub: id, email: accounts[id].email, groups: accounts[id].groups }),
          }
        : undefined,
    // No consent page: every client is granted openid, email and groups once the
    // user has logged in.
    loadExistingGrant: async (ctx) => {
      const grantId =
        ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) {
        const grant = await ctx.oidc.provider.Grant.find(grantId);
        if (grant) return grant;
      }
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid email groups');
      await grant.save();
      return grant;
    },
    renderError: (ctx, out) => {
      ctx.type = 'text/plain';
      ctx.body = `${out.error}: ${out.error_description ?? ''}\n`;
    },
  });
  p.kid = kid;
  p.on('authorization.success', (ctx) => {
    const session = ctx.oidc.session;
    const client = ctx.oidc.client;
    if (session?.accountId && client) {
      lastSid.set(session.accountId, session.sidFor(client.clientId) ?? null);
    }
  });
  p.on('backchannel.error', (_ctx, err) => console.error('idp: backchannel.error:', err?.message, err?.cause?.code ?? '', err?.cause?.message ?? ''));
  p.on('server_error', (_ctx, err) => console.error('idp: server_error:', err));
  return p;
}

function loginPage(uid, error) {
  // uid comes from oidc-provider (URL-safe characters); error is ours.
  return `<!doctype html>
<html><head><title>Test IdP login</title></head><body>
<p class="error">${error}</p>
<form method="post" action="/interaction/${uid}/login">
<label>Login <input name="login" autofocus></label>
<label>Password <input name="password" type="password"></label>
<label>One-time code <input name="otp" inputmode="numeric"></label>
<button type="submit">Sign in</button>
</form>
</body></html>
`;
}

function send(res, status, type, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', `${type}; charset=utf-8`);
  res.end(body);
}

// Login forms are a few dozen bytes; more than 64 KiB is not one.
async function readBody(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 64 * 1024) throw new Error('form body too large');
  }
  return body;
}
