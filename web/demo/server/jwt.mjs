// HS256 JSON Web Tokens for Herald, signed with node:crypto (no JWT dependency).
// Herald uses the bytes of its `token.hmac_secret` string as the HMAC key.

import crypto from 'node:crypto';

const HEADER = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');

/** Signs `claims` as an HS256 JWT with `secret`. */
export function signHs256(secret, claims) {
  const input = `${HEADER}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const signature = crypto.createHmac('sha256', secret).update(input).digest('base64url');
  return `${input}.${signature}`;
}

/** How long the tokens the demo hands out are valid, in seconds. */
export const TOKEN_TTL_SECONDS = 3600;

const nowSeconds = () => Math.floor(Date.now() / 1000);

/** A connection token for `user`: `{sub, exp}`. */
export function connectionToken(secret, user) {
  return signHs256(secret, { sub: user, exp: nowSeconds() + TOKEN_TTL_SECONDS });
}

/** A subscription token granting `channel` to `user`: `{sub, channel, exp}`. */
export function subscriptionToken(secret, user, channel) {
  return signHs256(secret, { sub: user, channel, exp: nowSeconds() + TOKEN_TTL_SECONDS });
}
