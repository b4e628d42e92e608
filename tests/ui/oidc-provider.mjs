// A real OpenID Connect provider (the `oidc-provider` library) for the
// admin interface's browser tests and `make demo`. It signs in the
// accounts of ACCOUNTS (a JSON object: login -> PostgreSQL role) with any
// password through the library's own login form, and issues JWT access
// tokens for the API's audience that name the role in `authaudit_role`.
//
// Environment: PORT, REDIRECT_URI (the admin interface's callback),
// AUDIENCE (the API's identity.audience), ACCOUNTS, CLIENT_ID, and
// SERVICE_CLIENTS (a JSON object: client id -> {secret, role}) for
// programs that take a token with the client credentials grant.
// Prints "ready <issuer>" once it listens.
import { generateKeyPairSync } from "node:crypto";
import Provider from "oidc-provider";

const port = Number(process.env.PORT);
const issuer = `http://localhost:${port}`;
const audience = process.env.AUDIENCE ?? "authaudit-api";
const accounts = JSON.parse(process.env.ACCOUNTS ?? "{}");
const clientId = process.env.CLIENT_ID ?? "authaudit-admin";
const resource = "urn:authaudit:api";
const services = JSON.parse(process.env.SERVICE_CLIENTS ?? "{}");

const { privateKey } = generateKeyPairSync("ed25519");
const jwk = { ...privateKey.export({ format: "jwk" }), kid: "test-1", alg: "EdDSA", use: "sig" };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      token_endpoint_auth_method: "none",
      redirect_uris: [process.env.REDIRECT_URI],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      id_token_signed_response_alg: "EdDSA",
    },
    ...Object.entries(services).map(([id, s]) => ({
      client_id: id,
      client_secret: s.secret,
      grant_types: ["client_credentials"],
      id_token_signed_response_alg: "EdDSA",
      redirect_uris: [],
      response_types: [],
    })),
  ],
  jwks: { keys: [jwk] },
  enabledJWA: { idTokenSigningAlgValues: ["EdDSA"] },
  scopes: ["openid", "authaudit"],
  claims: { openid: ["sub"] },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== resource) throw new Error("unknown resource");
        return {
          scope: "authaudit",
          audience,
          accessTokenTTL: 3600,
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: "EdDSA" } },
        };
      },
    },
  },
  findAccount: async (ctx, sub) => {
    if (!(sub in accounts)) return undefined;
    return { accountId: sub, claims: async () => ({ sub }) };
  },
  extraTokenClaims: async (ctx, token) => {
    if (token.kind === "ClientCredentials") {
      const s = services[token.clientId];
      return s ? { authaudit_role: s.role } : undefined;
    }
    if (!token.accountId || !(token.accountId in accounts)) return undefined;
    return { authaudit_role: accounts[token.accountId] };
  },
  ttl: { AccessToken: 3600, IdToken: 3600, Session: 3600, Interaction: 600, Grant: 3600 },
});
provider.proxy = false;

provider.listen(port, "127.0.0.1", () => {
  console.log(`ready ${issuer}`);
});
